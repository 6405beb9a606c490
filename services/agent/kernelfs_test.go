package agent_test

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/bai-sh/bai/internal/natstest"
	"github.com/bai-sh/bai/pkg/events"
	"github.com/bai-sh/bai/services/agent"
	"github.com/bai-sh/bai/services/agent/internal/sandboxinit"
)

// sentinel is a directory outside every work directory, owned by the
// test's user (root where the sandbox runs) and closed to others, with a
// file and a subdirectory: what a kernel's symlinks point at.
type sentinel struct {
	dir string
	was string
}

func newSentinel(t *testing.T) *sentinel {
	t.Helper()
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "file"), []byte("SENTINEL"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "dir"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "dir", "inner"), []byte("INNER"), 0o600); err != nil {
		t.Fatal(err)
	}
	s := &sentinel{dir: dir}
	s.was = s.snapshot(t)
	return s
}

// snapshot lists every entry under the sentinel: name, mode, owner, size,
// modification time and content.
func (s *sentinel) snapshot(t *testing.T) string {
	t.Helper()
	var out []string
	err := filepath.Walk(s.dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		st := fi.Sys().(*syscall.Stat_t)
		line := fmt.Sprintf("%s %v %d:%d %d %d", p, fi.Mode(), st.Uid, st.Gid, fi.Size(), fi.ModTime().UnixNano())
		if fi.Mode().IsRegular() {
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			line += " " + string(data)
		}
		out = append(out, line)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(out)
	return strings.Join(out, "\n")
}

// unchanged fails the test if anything under the sentinel was created,
// changed or removed.
func (s *sentinel) unchanged(t *testing.T, when string) {
	t.Helper()
	if now := s.snapshot(t); now != s.was {
		t.Errorf("%s: the sentinel outside the work dir changed:\n%s\nwas:\n%s", when, now, s.was)
	}
}

// longCode is python longer than the agent passes as one argument, so
// the agent writes it to .bai-run-<run id> in the work directory.
func longCode(print string) string {
	return "print(" + fmt.Sprintf("%q", print) + ")\n#" + strings.Repeat("x", 70<<10) + "\n"
}

// TestKernelSymlinksNeverFollowed: a kernel plants symlinks (to a file
// and a directory outside its work dir, dangling, through
// /proc/self/root) wherever the agent later writes or removes as root:
// the long-code file .bai-run-<id>, uploaded files (as the file itself, as
// an intermediate directory, nested), and the work dir at terminate.
// Every write either replaces the link with a file of the kernel's own or
// fails with a clear error; nothing outside the work dir is created,
// changed or removed.
func TestKernelSymlinksNeverFollowed(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	s := newSentinel(t)
	dir := t.TempDir()
	a := e.start(agent.Config{DataDir: dir, ID: "agent-1"})
	sp := spec("symlinker")
	e.schedule(a, sp)
	e.waitEvent(sp.ID, events.EventStarted)
	obs, err := e.js.CreateObjectStore(context.Background(), jetstream.ObjectStoreConfig{Bucket: events.UploadBucket})
	if err != nil {
		t.Fatal(err)
	}

	links := map[string]string{
		// long code, one per run id
		".bai-run-tofile":   filepath.Join(s.dir, "file"),
		".bai-run-todir":    filepath.Join(s.dir, "dir"),
		".bai-run-dangling": filepath.Join(s.dir, "dir", "new"),
		".bai-run-procroot": "/proc/self/root" + filepath.Join(s.dir, "file"),
		// uploads
		"upfile":       filepath.Join(s.dir, "file"),
		"updir":        filepath.Join(s.dir, "dir"),
		"updangling":   filepath.Join(s.dir, "newdir"),
		"upproc":       "/proc/self/root" + s.dir,
		"nested/a/b":   filepath.Join(s.dir, "dir"),
		"nested/a/f":   filepath.Join(s.dir, "dir", "inner"),
		"nested/c/dot": "../../../../../../../../../../../.." + s.dir,
	}
	var plant strings.Builder
	plant.WriteString("set -e\nmkdir -p nested/a nested/c adir\n")
	for l, target := range links {
		fmt.Fprintf(&plant, "ln -s %q %q\n", target, l)
	}
	e.execute(a, sp, events.RunSpec{ID: "plant", Exec: plant.String()})
	if o := e.waitExit(sp.ID, "plant"); o.exit != "0" {
		t.Fatalf("plant: exit %s, stderr %s", o.exit, o.stderr)
	}

	t.Run("long-code", func(t *testing.T) {
		for _, id := range []string{"tofile", "todir", "dangling", "procroot"} {
			e.execute(a, sp, events.RunSpec{ID: id, Code: longCode("ran " + id)})
			o := e.waitExit(sp.ID, id)
			// A link to a directory is replaced like any other: the
			// name is the agent's, the kernel planted it.
			if o.exit != "0" || string(o.stdout) != "ran "+id+"\n" {
				t.Errorf("run %s over a symlink: exit %s stdout %q stderr %q", id, o.exit, o.stdout, o.stderr)
			}
			fi, err := os.Lstat(filepath.Join(workDir(dir, sp.MainKernelID), ".bai-run-"+id))
			if err != nil || !fi.Mode().IsRegular() {
				t.Errorf(".bai-run-%s: %v %v, want the agent's regular file", id, fi, err)
			}
		}
		s.unchanged(t, "after long code")
	})

	t.Run("uploads", func(t *testing.T) {
		for _, c := range []struct {
			run, path string
			refused   string // "" when the upload is written
		}{
			{"u1", "upfile", ""},
			{"u2", "updir/x.txt", "a symlink is in the path"},
			{"u3", "updir/new/deep/x.txt", "a symlink is in the path"},
			{"u4", "updangling/x.txt", "a symlink is in the path"},
			{"u5", "upproc/file", "a symlink is in the path"},
			{"u6", "nested/a/b/x.txt", "a symlink is in the path"},
			{"u7", "nested/a/b/sub/x.txt", "a symlink is in the path"},
			{"u8", "nested/a/f", ""},
			{"u9", "nested/c/dot/file", "a symlink is in the path"},
			{"u10", "adir", "a directory where a file is"},
			{"u11", "fresh/dirs/x.txt", ""},
		} {
			if _, err := obs.PutBytes(context.Background(), events.UploadObject(testAK, sp.ID, c.run, c.path), []byte("UPLOADED "+c.run)); err != nil {
				t.Fatal(err)
			}
			e.execute(a, sp, events.RunSpec{ID: c.run, Exec: "cat " + c.path + " && echo >> " + c.path + " && touch $(dirname " + c.path + ")/mine", Files: []string{c.path}})
			o := e.waitExit(sp.ID, c.run)
			switch {
			case c.refused == "" && (o.exit != "0" || string(o.stdout) != "UPLOADED "+c.run):
				t.Errorf("upload %s: exit %s stdout %q stderr %q, want it written and the kernel's", c.path, o.exit, o.stdout, o.stderr)
			case c.refused != "" && (o.exit != "127" || !strings.Contains(string(o.stderr), c.refused) || strings.Contains(string(o.stderr), dir)):
				t.Errorf("upload %s: exit %s stderr %q, want 127 and %q without the host path", c.path, o.exit, o.stderr, c.refused)
			}
		}
		s.unchanged(t, "after uploads")
	})

	t.Run("terminate", func(t *testing.T) {
		e.execute(a, sp, events.RunSpec{ID: "replant", Exec: plant.String()[len("set -e\n"):] + "true"})
		e.waitExit(sp.ID, "replant")
		e.terminate(a, sp, events.ReasonUserRequested)
		e.waitEvent(sp.ID, events.EventTerminated)
		if _, err := os.Lstat(workDir(dir, sp.MainKernelID)); !os.IsNotExist(err) {
			t.Errorf("work dir after terminate: %v", err)
		}
		s.unchanged(t, "after terminate")
	})
}

// TestKernelRemoveAllStaysInside: the process runtime's destroy of a work
// directory full of symlinks out of it (unsandboxed too: os.RemoveAll on
// the directory itself) removes the links, never their targets.
func TestKernelRemoveAllStaysInside(t *testing.T) {
	t.Parallel()
	s := newSentinel(t)
	for _, opts := range []agent.SandboxOptions{{Disable: true}, {}} {
		r := agent.NewProcessRuntime(t.TempDir(), map[string]string{"python:": "/usr/bin/python3"})
		r.Sandbox(opts)
		k := &events.SessionSpec{ID: "rm", Image: testImage, MainKernelID: "k-rm", Slots: map[string]string{"cpu": "1", "mem": "256m"}}
		if err := r.Create(t.Context(), k); err != nil {
			t.Fatal(err)
		}
		p, err := r.Exec(t.Context(), k, events.RunSpec{ID: "r", Exec: `set -e
mkdir -p d/e
ln -s ` + s.dir + ` out
ln -s ` + filepath.Join(s.dir, "file") + ` d/file
ln -s ` + filepath.Join(s.dir, "dir") + ` d/e/dir
ln -s /proc/self/root` + s.dir + ` d/proc
ln -s /nonexistent d/dangling`})
		if err != nil {
			t.Fatal(err)
		}
		if code, err := p.Wait(); code != 0 || err != nil {
			t.Fatalf("sandbox %v: plant: exit %d %v", r.Sandboxed(), code, err)
		}
		p.Close()
		if err := r.Destroy(t.Context(), k); err != nil {
			t.Fatal(err)
		}
		if ok, err := r.Exists(t.Context(), k); ok || err != nil {
			t.Errorf("sandbox %v: kernel exists after destroy: %v", r.Sandboxed(), err)
		}
		s.unchanged(t, fmt.Sprintf("sandbox %v: after destroy", r.Sandboxed()))
		if err := r.Purge(t.Context()); err != nil {
			t.Error(err)
		}
	}
}

// TestKernelPrivateTmp: a kernel's /tmp, /var/tmp and /dev/shm are its own
// size-bounded tmpfs: what it writes there is not on the host's and not
// seen by another kernel, a write past the bound fails with ENOSPC, every
// other host directory is read-only to it, and its mountinfo names no
// other kernel.
func TestKernelPrivateTmp(t *testing.T) {
	needSandbox(t)
	t.Parallel()
	e := newEnv(t)
	dir := t.TempDir()
	// A world-writable host directory outside the temporary ones.
	shared, err := os.MkdirTemp("/", ".bai-test-shared-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(shared) })
	if err := os.Chmod(shared, 0o1777); err != nil {
		t.Fatal(err)
	}
	// Another agent's kernel on this host, its work dir under /tmp.
	foreign := filepath.Join(t.TempDir(), "kernels", "k-foreign")
	if err := os.MkdirAll(foreign, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount("tmpfs", foreign, "tmpfs", 0, "size=64k"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Unmount(foreign, syscall.MNT_DETACH) })
	// And another agent's kernel with its state elsewhere (/var/lib/...),
	// outside every directory a sandbox replaces: known by the source of
	// its mount.
	state, err := os.MkdirTemp("/", ".bai-test-state-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(state) })
	for _, m := range []struct{ dir, source string }{
		{filepath.Join(state, "kernels"), sandboxinit.KernelsRootSource},
		{filepath.Join(state, "kernels", "k-elsewhere"), sandboxinit.KernelSource},
	} {
		if err := os.MkdirAll(m.dir, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := syscall.Mount(m.source, m.dir, "tmpfs", 0, "size=64k,mode=0700"); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { syscall.Unmount(m.dir, syscall.MNT_DETACH) }) // before the RemoveAll
	}
	a := e.start(agent.Config{DataDir: dir, ID: "agent-1", Sandbox: agent.SandboxOptions{TmpSize: 1 << 20, ShmSize: 1 << 20}})
	one, two := spec("tmpone"), spec("tmptwo")
	for _, sp := range []*events.SessionSpec{one, two} {
		e.schedule(a, sp)
		e.waitEvent(sp.ID, events.EventStarted)
	}
	mark := fmt.Sprintf("bai-mark-%d", os.Getpid())
	tmps := []string{"/tmp", "/var/tmp", "/dev/shm"}

	// Kernel one writes its marks and stays, so that they exist while the
	// others look.
	e.execute(a, one, events.RunSpec{ID: "plant", Exec: `set -e
for d in ` + strings.Join(tmps, " ") + `; do echo ONE > $d/` + mark + `; done
cat /tmp/` + mark + ` /var/tmp/` + mark + ` /dev/shm/` + mark + `
echo planted; sleep 60`})
	natstest.CheckFor(t, wait, step, func() error {
		if o := e.output(one.ID, "plant"); !strings.HasSuffix(string(o.stdout), "planted\n") || o.exited {
			return fmt.Errorf("plant: stdout %q stderr %q exit %q", o.stdout, o.stderr, o.exit)
		}
		return nil
	})
	if o := e.output(one.ID, "plant"); string(o.stdout) != "ONE\nONE\nONE\nplanted\n" {
		t.Fatalf("plant: %q", o.stdout)
	}
	for _, d := range tmps {
		if _, err := os.Lstat(filepath.Join(d, mark)); !os.IsNotExist(err) {
			t.Errorf("host %s has the kernel's file: %v", d, err)
		}
	}
	tests := []struct {
		name, exec, want string
	}{
		{"other-kernel", `ls -a /tmp /var/tmp /dev/shm | grep -c ` + mark + ` || true`, "0\n"},
		{"enospc", `python3 -c '
import errno
for d in ["/tmp", "/var/tmp", "/dev/shm"]:
    try:
        with open(d + "/big", "wb") as f:
            f.write(b"x" * (4 << 20))
        print(d, "written")
    except OSError as e:
        print(d, errno.errorcode[e.errno])
'`, "/tmp ENOSPC\n/var/tmp ENOSPC\n/dev/shm ENOSPC\n"},
		{"shm-semaphores", `python3 -c 'import multiprocessing as m; print(m.Pool(2).map(abs, [-1, -2]))'`, "[1, 2]\n"},
		{"host-read-only", `for d in ` + shared + ` / /var /dev /run; do touch $d/` + mark + ` 2>/dev/null && echo wrote $d; done; echo end`, "end\n"},
		// One mount_setattr makes the tree read-only: the mounts made
		// after it and the ptys stay writable. (Of mounts stacked on one
		// point, the last listed is the one seen.)
		{"mount-flags", `awk '{f[$5] = substr($6, 1, 2)} END {print f["/"], f["/dev/pts"], f["/home/work"], f["/tmp"]}' /proc/self/mountinfo`, "ro rw rw rw\n"},
		{"pty", `python3 -c 'import os; m, s = os.openpty(); os.write(s, b"x"); print(os.read(m, 1).decode())'`, "x\n"},
		{"mountinfo", `grep -e ` + one.MainKernelID + ` -e ` + two.MainKernelID + ` -e k-foreign -e k-elsewhere -e /kernels/ -e .bai-test-state- /proc/self/mountinfo || true`, ""},
		// /sys/fs/cgroup shows, of each hierarchy the kernel is in, its
		// own cgroup as the root (a cgroup namespace), read-only: no other
		// kernel, and its own limit where a container would read it.
		{"cgroups-others", `find /sys/fs/cgroup | grep -c -e ` + one.MainKernelID + ` -e ` + two.MainKernelID + ` || true`, "0\n"},
		{"cgroups-own", `for f in /sys/fs/cgroup/memory.max /sys/fs/cgroup/memory/memory.limit_in_bytes; do [ -f $f ] && cat $f; done
grep -v ':/$' /proc/self/cgroup | grep -e memory -e pids -e '^0::' ; mkdir /sys/fs/cgroup/memory/x /sys/fs/cgroup/x 2>/dev/null && echo made`, "1073741824\n"},
		// Of the host's cgroup hierarchies, only the kernel's are mounted:
		// v1's memory, pids and cpu, or v2's unified one where the kernel
		// is in v2. Not blkio, devices, name=systemd, a hybrid's empty
		// unified one: the host's tree, its services' names.
		{"cgroups-host", `awk '{split($0, h, " - "); split(h[2], t, " ")}
t[1] == "cgroup" {v1++; if (("," t[3] ",") !~ /,(memory|pids|cpu),/) print "host hierarchy", $5}
t[1] == "cgroup2" {v2[$5] = 1}
END {if (v1) for (p in v2) print "host hierarchy", p}' /proc/self/mountinfo`, ""},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			id := fmt.Sprintf("r%d", i)
			e.execute(a, two, events.RunSpec{ID: id, Exec: tc.exec})
			if o := e.waitExit(two.ID, id); string(o.stdout) != tc.want {
				t.Errorf("stdout %q (stderr %.300q), want %q", o.stdout, o.stderr, tc.want)
			}
		})
	}
	if ents, _ := os.ReadDir(shared); len(ents) != 0 {
		t.Errorf("a kernel wrote the shared host directory: %v", ents)
	}
	e.terminate(a, one, events.ReasonUserRequested)
	e.waitEvent(one.ID, events.EventTerminated)
	for _, d := range append(tmps, shared) {
		if _, err := os.Lstat(filepath.Join(d, mark)); !os.IsNotExist(err) {
			t.Errorf("host %s has the kernel's file after terminate: %v", d, err)
		}
	}
}

// TestKernelTmpCountsInMemory: what a kernel keeps in its private
// /dev/shm, /tmp and /var/tmp is charged to its own memory cgroup.
func TestKernelTmpCountsInMemory(t *testing.T) {
	needSandbox(t)
	t.Parallel()
	r := agent.NewProcessRuntime(t.TempDir(), map[string]string{"python:": "/usr/bin/python3"})
	if notes := r.Sandbox(agent.SandboxOptions{}); len(notes) > 0 {
		t.Fatalf("notes %q", notes)
	}
	t.Cleanup(func() {
		if err := r.Purge(context.Background()); err != nil {
			t.Errorf("purge: %v", err)
		}
	})
	k := &events.SessionSpec{ID: "mem", Image: testImage, MainKernelID: "k-tmpmem", Slots: map[string]string{"cpu": "1", "mem": "512m"}}
	if err := r.Create(t.Context(), k); err != nil {
		t.Fatal(err)
	}
	p, err := r.Exec(t.Context(), k, events.RunSpec{ID: "r", Code: `
def usage():
    for l in open("/proc/self/cgroup"):
        _, ctrl, path = l.strip().split(":", 2)
        if "memory" in ctrl.split(","):
            return int(open("/sys/fs/cgroup/memory" + path + "/memory.usage_in_bytes").read())
    for l in open("/proc/self/cgroup"):
        _, ctrl, path = l.strip().split(":", 2)
        if ctrl == "":
            return int(open("/sys/fs/cgroup" + path + "/memory.current").read())
for d in ["/dev/shm", "/tmp", "/var/tmp"]:
    before = usage()
    with open(d + "/x", "wb") as f:
        f.write(b"x" * (32 << 20))
    grew = usage() - before
    print(d, "charged" if grew >= 30 << 20 else "grew only %d" % grew)
`})
	if err != nil {
		t.Fatal(err)
	}
	out, _ := io.ReadAll(p.Stdout())
	errOut, _ := io.ReadAll(p.Stderr())
	code, err := p.Wait()
	p.Close()
	if want := "/dev/shm charged\n/tmp charged\n/var/tmp charged\n"; code != 0 || err != nil || string(out) != want {
		t.Errorf("exit %d %v, stdout %q (stderr %q), want %q", code, err, out, errOut, want)
	}
}
