package agent_test

import (
	"archive/tar"
	"bytes"
	"context"
	"debug/elf"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/client"

	"github.com/bai-sh/bai/internal/natstest"
	"github.com/bai-sh/bai/pkg/events"
	"github.com/bai-sh/bai/services/agent"
)

// dockerClient is the engine's client, or a visible skip where no engine
// answers.
func dockerClient(t *testing.T) *client.Client {
	t.Helper()
	c, err := client.New(client.FromEnv)
	if err == nil {
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		_, err = c.Ping(ctx, client.PingOptions{})
		cancel()
	}
	if err != nil {
		t.Skipf("SKIP: no Docker engine answers: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// busyboxRootfs is a tar of a root file system holding only a static
// busybox and its applets' links.
func busyboxRootfs(t *testing.T) []byte {
	t.Helper()
	bb, err := os.ReadFile("/bin/busybox")
	if err != nil {
		t.Skipf("SKIP: no /bin/busybox (apt-get install busybox-static): %v", err)
	}
	if f, err := elf.NewFile(bytes.NewReader(bb)); err != nil || slices.ContainsFunc(f.Progs, func(p *elf.Prog) bool { return p.Type == elf.PT_INTERP }) {
		t.Skipf("SKIP: /bin/busybox is not static (apt-get install busybox-static): %v", err)
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, d := range []string{"bin/", "tmp/", "proc/", "sys/", "dev/", "etc/", "home/"} {
		mode := int64(0o755)
		if d == "tmp/" {
			mode = 0o1777
		}
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d, Mode: mode}); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "bin/busybox", Mode: 0o755, Size: int64(len(bb))}); err != nil {
		t.Fatal(err)
	}
	if _, err := tw.Write(bb); err != nil {
		t.Fatal(err)
	}
	for _, app := range []string{"sh", "sleep", "echo", "cat", "ls", "id", "hostname", "env", "sort", "grep", "kill", "true", "dd", "head", "wc", "rm", "setsid"} {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeSymlink, Name: "bin/" + app, Linkname: "busybox", Mode: 0o777}); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// localRegistry runs Debian's docker-registry on a loopback port until the
// test ends and returns its host:port.
func localRegistry(t *testing.T) string {
	t.Helper()
	bin, err := exec.LookPath("docker-registry")
	if err != nil {
		t.Skipf("SKIP: no docker-registry (apt-get install docker-registry): %v", err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", natstest.FreePorts(t, 1)[0])
	dir := t.TempDir()
	cfg := filepath.Join(dir, "config.yml")
	conf := fmt.Sprintf("version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: %s\nhttp:\n  addr: %s\n", filepath.Join(dir, "data"), addr)
	if err := os.WriteFile(cfg, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	var log bytes.Buffer
	cmd := exec.Command(bin, "serve", cfg)
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	natstest.CheckFor(t, 20*time.Second, step, func() error {
		resp, err := http.Get("http://" + addr + "/v2/")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("registry: %s; log %s", resp.Status, log.String())
		}
		return nil
	})
	return addr
}

// pushedImage imports the busybox rootfs, pushes it to the registry and
// removes it from the engine, so that a session pulls it for real. It
// returns the image reference.
func pushedImage(t *testing.T, c *client.Client, registry string) string {
	t.Helper()
	ctx := t.Context()
	local := "bai-test/busybox:" + strings.ToLower(strings.ReplaceAll(t.Name(), "/", "-"))
	ref := registry + "/" + local
	res, err := c.ImageImport(ctx, client.ImageImportSource{Source: bytes.NewReader(busyboxRootfs(t)), SourceName: "-"}, local, client.ImageImportOptions{})
	if err != nil {
		t.Fatalf("import image: %v", err)
	}
	_, _ = io.Copy(io.Discard, res)
	res.Close()
	t.Cleanup(func() {
		for _, r := range []string{local, ref} {
			_, _ = c.ImageRemove(context.Background(), r, client.ImageRemoveOptions{Force: true, PruneChildren: true})
		}
	})
	if _, err := c.ImageTag(ctx, client.ImageTagOptions{Source: local, Target: ref}); err != nil {
		t.Fatalf("tag image: %v", err)
	}
	push, err := c.ImagePush(ctx, ref, client.ImagePushOptions{RegistryAuth: base64.URLEncoding.EncodeToString([]byte("{}"))})
	if err != nil {
		t.Fatalf("push image: %v", err)
	}
	for m, err := range push.JSONMessages(ctx) {
		if err != nil {
			t.Fatalf("push image: %v", err)
		}
		if m.Error != nil {
			t.Fatalf("push image: %s", m.Error.Message)
		}
	}
	for _, r := range []string{local, ref} {
		if _, err := c.ImageRemove(ctx, r, client.ImageRemoveOptions{Force: true, PruneChildren: true}); err != nil {
			t.Fatalf("remove image %s: %v", r, err)
		}
	}
	return ref
}

// TestDockerRuntime: a session on the docker runtime pulls its image from
// a registry (PULLING, progress), runs in a container with its slot
// limits, labels and no network, streams its executions' output, and is
// removed on terminate.
func TestDockerRuntime(t *testing.T) {
	c := dockerClient(t)
	registry := localRegistry(t)
	ref := pushedImage(t, c, registry)
	t.Parallel()

	e := newEnv(t)
	owner := "test-" + strings.ToLower(strings.ReplaceAll(t.Name(), "/", "-"))
	rt, err := agent.NewDockerRuntime(t.Context(), agent.DockerOptions{Owner: owner, Interpreter: "/bin/sh"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if _, err := rt.Reap(context.Background(), nil); err != nil {
			t.Errorf("reap containers: %v", err)
		}
		rt.Close()
	})
	dataDir := t.TempDir()
	a := e.start(agent.Config{DataDir: dataDir, ID: "agent-d", Runtime: rt})
	sp := spec("d1")
	sp.Image = ref
	sp.Slots = map[string]string{"cpu": "0.5", "mem": "128m"}
	sp.Env = map[string]string{"GREETING": "hi"}
	sp.Run = &events.RunSpec{ID: "r1", Code: `echo "$GREETING from code"; echo err >&2; exit 3`}
	e.schedule(a, sp)
	evs := e.waitEvent(sp.ID, events.EventStarted)
	if find(evs, events.EventPulling) == nil {
		t.Errorf("no %s: %v", events.EventPulling, names(evs))
	}
	if pr := find(evs, events.EventPullProgress); pr == nil || pr.Progress == nil {
		t.Errorf("no %s with progress: %v", events.EventPullProgress, names(evs))
	}

	o := e.waitExit(sp.ID, "r1")
	if string(o.stdout) != "hi from code\n" || string(o.stderr) != "err\n" || o.exit != "3" {
		t.Errorf("run: stdout %q stderr %q exit %q", o.stdout, o.stderr, o.exit)
	}
	e.execute(a, sp, events.RunSpec{ID: "r2", Exec: `ls /sys/class/net; pwd; hostname`})
	if o := e.waitExit(sp.ID, "r2"); string(o.stdout) != "lo\n/home/work\n"+sp.MainKernelID+"\n" || o.exit != "0" {
		t.Errorf("exec: stdout %q stderr %q exit %q", o.stdout, o.stderr, o.exit)
	}
	// Private temporary directories: tmpfs of the container's own.
	e.execute(a, sp, events.RunSpec{ID: "tmp", Exec: `for d in /tmp /var/tmp /dev/shm; do grep " $d tmpfs " /proc/mounts | cut -d' ' -f2,3; done`})
	if o := e.waitExit(sp.ID, "tmp"); string(o.stdout) != "/tmp tmpfs\n/var/tmp tmpfs\n/dev/shm tmpfs\n" || o.exit != "0" {
		t.Errorf("temporary dirs: stdout %q stderr %q exit %q", o.stdout, o.stderr, o.exit)
	}

	ins, err := c.ContainerInspect(t.Context(), "bai-"+sp.MainKernelID, client.ContainerInspectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cfg, hc := ins.Container.Config, ins.Container.HostConfig
	if cfg.Labels["ai.bai.session-id"] != sp.ID || cfg.Labels["ai.bai.kernel-id"] != sp.MainKernelID {
		t.Errorf("labels %v", cfg.Labels)
	}
	if hc.ShmSize != 64<<20 || !strings.Contains(hc.Tmpfs["/tmp"], "size=268435456") || !strings.Contains(hc.Tmpfs["/var/tmp"], "size=268435456") {
		t.Errorf("temporary dirs: shm %d tmpfs %v", hc.ShmSize, hc.Tmpfs)
	}
	if hc.Memory != 128<<20 || hc.NanoCPUs != 5e8 || hc.PidsLimit == nil || *hc.PidsLimit != 512 || hc.NetworkMode != "none" {
		t.Errorf("limits: mem %d cpus %d pids %v network %q", hc.Memory, hc.NanoCPUs, hc.PidsLimit, hc.NetworkMode)
	}

	// A long execution is killed by the terminate; the container goes.
	e.execute(a, sp, events.RunSpec{ID: "long", Exec: `echo started; sleep 600`})
	natstest.CheckFor(t, wait, step, func() error {
		if o := e.output(sp.ID, "long"); string(o.stdout) != "started\n" {
			return fmt.Errorf("long stdout %q", o.stdout)
		}
		return nil
	})
	e.terminate(a, sp, "")
	e.waitEvent(sp.ID, events.EventTerminated)
	if o := e.output(sp.ID, "long"); o.exit != "137" {
		t.Errorf("long exit %q, want 137", o.exit)
	}
	if ks, err := rt.Kernels(t.Context()); err != nil || len(ks) != 0 {
		t.Errorf("containers after terminate: %v %v", ks, err)
	}

	// A container of this owner that the agent's state lacks (an orphan)
	// is removed when the agent starts again.
	// (It asks for a network: its container is on the default bridge.)
	orphan := spec("orphan")
	orphan.Image = ref
	orphan.Network = true
	if err := rt.Create(t.Context(), orphan); err != nil {
		t.Fatal(err)
	}
	if ins, err := c.ContainerInspect(t.Context(), "bai-"+orphan.MainKernelID, client.ContainerInspectOptions{}); err != nil || ins.Container.HostConfig.NetworkMode != "bridge" {
		t.Errorf("a session asking for a network: %v %+v", err, ins.Container.HostConfig)
	}
	a.stop()
	a = e.start(agent.Config{DataDir: dataDir, ID: "agent-d", Runtime: rt})
	if ks, err := rt.Kernels(t.Context()); err != nil || len(ks) != 0 {
		t.Errorf("containers after a restart with an orphan: %v %v", ks, err)
	}

	// An image no registry has fails the start with a reason.
	bad := spec("d2")
	bad.Image = registry + "/bai-test/absent:1"
	e.schedule(a, bad)
	evs = e.waitEvent(bad.ID, events.EventTerminated)
	if f := find(evs, events.EventError); f == nil || f.Reason != events.ReasonFailedToStart {
		t.Errorf("absent image: %v", names(evs))
	}
}
