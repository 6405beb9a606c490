package sandboxinit

import (
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// TestCgroupView: in a mount namespace of its own, cgroupView shows a
// cgroup hierarchy from the kernel's own cgroup down, read-only: a cgroup2
// one named through its mount or through a symbolic link to it (v1's cpu
// -> cpu,cpuacct), and a v1 one (a named one, with a release agent, as
// systemd mounts its own). A sibling cgroup or the parent is not
// listed, /proc/thread-self/cgroup says "/", and the host's hierarchy is
// untouched.
func TestCgroupView(t *testing.T) {
	if mode := os.Getenv("SANDBOXINIT_TEST_CGROUPVIEW"); mode != "" {
		cgroupViewChild(t, mode, os.Getenv("SANDBOXINIT_TEST_DIR"), os.Getenv("SANDBOXINIT_TEST_CGROUP"))
		return
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root (a mount namespace, cgroups)")
	}
	child := func(t *testing.T, mode, parent string) {
		for _, d := range []string{parent, filepath.Join(parent, "k-mine"), filepath.Join(parent, "k-other")} {
			if err := os.Mkdir(d, 0o755); err != nil {
				t.Skipf("cannot make a cgroup here: %v", err)
			}
		}
		defer func() {
			for _, d := range []string{filepath.Join(parent, "k-mine"), filepath.Join(parent, "k-other"), parent} {
				if err := os.Remove(d); err != nil {
					t.Errorf("cleanup: %v", err)
				}
			}
		}()
		inMountNS(t, "TestCgroupView", "SANDBOXINIT_TEST_CGROUPVIEW="+mode, "SANDBOXINIT_TEST_DIR="+t.TempDir(),
			"SANDBOXINIT_TEST_CGROUP="+parent)
		// The host's view is as it was.
		if ents, err := os.ReadDir(parent); err != nil || len(ents) < 2 {
			t.Errorf("host's %s after: %v, %v", parent, ents, err)
		}
	}
	for _, mode := range []string{"direct", "symlink"} {
		t.Run(mode, func(t *testing.T) {
			point, _, err := Cgroup2()
			if err != nil || point == "" {
				t.Skipf("no cgroup2 mount here: %v", err)
			}
			child(t, mode, filepath.Join(point, "bai-test-view-"+strconv.Itoa(os.Getpid())))
		})
	}
	t.Run("v1", func(t *testing.T) {
		point := t.TempDir()
		// One name for every run: a v1 hierarchy unmounted while a cgroup
		// just removed in it is not yet released stays, unmounted, until
		// the host stops; by its name the next run mounts it again
		// rather than making one more.
		if err := syscall.Mount("cgroup", point, "cgroup", 0, "none,name="+viewHierarchy+",release_agent=/bin/true"); err != nil {
			t.Skipf("no cgroup v1 here: %v", err)
		}
		defer syscall.Unmount(point, syscall.MNT_DETACH)
		child(t, "v1", filepath.Join(point, "bai-test-view-"+strconv.Itoa(os.Getpid())))
	})
}

// viewHierarchy names TestCgroupView's v1 hierarchy.
const viewHierarchy = "bai-test-view"

func cgroupViewChild(t *testing.T, mode, dir, parent string) {
	// As the helper: this thread joins the kernel's cgroup (v2 moves the
	// process) and makes the view.
	runtime.LockOSThread()
	if err := syscall.Mount("", "/", "", syscall.MS_REC|syscall.MS_PRIVATE, ""); err != nil {
		t.Fatal(err)
	}
	point := filepath.Dir(parent)
	mine := filepath.Join(parent, "k-mine")
	if err := os.WriteFile(filepath.Join(mine, "cgroup.procs"), []byte("0"), 0); err != nil {
		t.Fatal(err)
	}
	join := filepath.Join(mine, "cgroup.procs")
	if mode == "symlink" {
		link := filepath.Join(dir, "cg")
		if err := os.Symlink(point, link); err != nil {
			t.Fatal(err)
		}
		join = filepath.Join(link, filepath.Base(parent), "k-mine", "cgroup.procs")
	}
	host, err := readMounts()
	if err != nil {
		t.Fatal(err)
	}
	// A join file on no cgroup mount is an error, not a view of nothing.
	if err := cgroupView(host, []string{filepath.Join(dir, "cgroup.procs")}); err == nil {
		t.Error("a join file outside every cgroup mount: no error")
	}
	if err := cgroupView(host, []string{join}); err != nil {
		t.Fatal(err)
	}
	// The hierarchy's root is the kernel's cgroup: its files, no sibling,
	// no parent.
	ents, err := os.ReadDir(point)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	if !slices.Contains(names, "cgroup.procs") || slices.ContainsFunc(names, func(n string) bool {
		return strings.HasPrefix(n, "bai-test-view-") || n == "k-mine" || n == "k-other"
	}) {
		t.Errorf("%s lists %v", point, names)
	}
	if b, err := os.ReadFile(filepath.Join(point, "cgroup.procs")); err != nil || !strings.Contains(string(b), strconv.Itoa(os.Getpid())) {
		t.Errorf("its cgroup.procs: %q, %v (this process %d is in it)", b, err, os.Getpid())
	}
	want := "0::/\n"
	if mode == "v1" {
		want = ":name=" + viewHierarchy + ":/\n"
	}
	if b, err := os.ReadFile("/proc/thread-self/cgroup"); err != nil || !strings.Contains(string(b), want) {
		t.Errorf("/proc/thread-self/cgroup: %q, %v; want %q", b, err, want)
	}
	if err := os.WriteFile(filepath.Join(point, "f"), nil, 0o600); err == nil {
		t.Error("a file made in the view")
	}
	if err := os.Mkdir(filepath.Join(point, "child"), 0o755); !errors.Is(err, syscall.EROFS) {
		t.Errorf("a cgroup made in the view: %v, want EROFS", err)
	}
}

// cgroupView makes the plan's cgroup view here.
func cgroupView(host []mount, joined []string) error {
	b := newBuilder()
	if err := b.cgroupView(host, joined); err != nil {
		return err
	}
	return b.p.err(b.p.run(0, len(b.p.steps)))
}
