package server

import (
	"archive/tar"
	"bytes"
	"context"
	"debug/elf"
	"encoding/json"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/bai-sh/bai/pkg/events"
)

// localBusyboxImage imports a root file system holding only a static
// busybox into the local Docker engine, as an operator without a
// registry would (docker import, docker load or docker build), and
// returns its reference; it skips where there is no engine or no static
// busybox.
func localBusyboxImage(t *testing.T) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := exec.CommandContext(ctx, "docker", "info").Run(); err != nil {
		t.Skipf("SKIP: no Docker engine answers (docker info): %v", err)
	}
	bb, err := os.ReadFile("/bin/busybox")
	if err != nil {
		t.Skipf("SKIP: no /bin/busybox (apt-get install busybox-static): %v", err)
	}
	if f, err := elf.NewFile(bytes.NewReader(bb)); err != nil || f.Section(".interp") != nil {
		t.Skip("SKIP: /bin/busybox is not static (apt-get install busybox-static)")
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	must := func(err error) {
		if err != nil {
			t.Fatal(err)
		}
	}
	must(tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: "bin/", Mode: 0o755}))
	must(tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "bin/busybox", Mode: 0o755, Size: int64(len(bb))}))
	_, err = tw.Write(bb)
	must(err)
	for _, app := range []string{"sh", "sleep", "echo", "cat", "ls"} {
		must(tw.WriteHeader(&tar.Header{Typeflag: tar.TypeSymlink, Name: "bin/" + app, Linkname: "busybox", Mode: 0o777}))
	}
	must(tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: "tmp/", Mode: 0o1777}))
	must(tw.Close())
	ref := "bai-test/server-busybox:" + strings.ToLower(t.Name())
	cmd := exec.CommandContext(ctx, "docker", "import", "-", ref)
	cmd.Stdin = &buf
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("docker import: %v: %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("docker", "rmi", "-f", ref).Run() })
	return ref
}

// TestServerDockerRuntime: bai-server --runtime docker runs sessions as
// containers of an image that is only in the local engine (no registry),
// registered with bai admin image add.
func TestServerDockerRuntime(t *testing.T) {
	ref := localBusyboxImage(t)
	r := startServerWith(t, Config{Runtime: RuntimeDocker, DockerInterpreter: "/bin/sh", IdleTimeout: -1,
		AgentCapacity: map[string]string{"cpu": "2", "mem": "1g"}})
	var l events.AgentListResponse
	if err := json.Unmarshal([]byte(r.ok(t, "admin", "agent", "list", "--output", "json")), &l); err != nil || len(l.Agents) != 1 {
		t.Fatalf("agent list %+v %v", l, err)
	}
	agentID := l.Agents[0].ID
	t.Cleanup(func() {
		out, _ := exec.Command("docker", "ps", "-aq", "--filter", "label=ai.bai.agent="+agentID).Output()
		if ids := strings.Fields(string(out)); len(ids) > 0 {
			_ = exec.Command("docker", append([]string{"rm", "-f"}, ids...)...).Run()
		}
	})
	if l.Agents[0].Runtime != RuntimeDocker {
		t.Fatalf("agent runtime %q", l.Agents[0].Runtime)
	}
	r.ok(t, "admin", "image", "add", "--alias", "bb", ref)
	out := r.ok(t, "run", "--rm", "-c", "echo hello from a container; cat /proc/1/cmdline", "bb")
	if !strings.Contains(out, "hello from a container") || !strings.Contains(out, "while :") {
		t.Fatalf("run output %q", out)
	}
}

func TestServerRuntimeConfig(t *testing.T) {
	if _, err := New(Config{Runtime: "vm"}); err == nil || !strings.Contains(err.Error(), `runtime "vm"`) {
		t.Fatalf("unknown runtime: %v", err)
	}
	// The sim runtime (benchmarks of the control plane): a run passes
	// through the whole lifecycle, runs nothing and exits 0.
	r := startServerWith(t, Config{Runtime: RuntimeSim})
	code, stdout, stderr := r.bai(t, "run", "--rm", "-c", "import sys; sys.exit(3)", "python")
	if code != 0 || stdout != "" {
		t.Fatalf("run on the sim runtime: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
}
