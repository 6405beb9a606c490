package sandboxinit

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
)

// TestReadOnly: in a mount namespace of its own, readOnly leaves every
// mount read-only (a stacked one and one below another included) but a
// devpts kept writable (the one seen, of devpts mounts stacked on one
// point), by mount_setattr and by the remounts where that
// is not taken; a mount kept writable that is not devpts may be either
// (it goes or is covered after).
func TestReadOnly(t *testing.T) {
	if mode := os.Getenv("SANDBOXINIT_TEST_READONLY"); mode != "" {
		readOnlyChild(t, mode, os.Getenv("SANDBOXINIT_TEST_DIR"))
		return
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root (a mount namespace)")
	}
	for _, mode := range []string{"setattr", "remount"} {
		t.Run(mode, func(t *testing.T) {
			inMountNS(t, "TestReadOnly", "SANDBOXINIT_TEST_READONLY="+mode, "SANDBOXINIT_TEST_DIR="+t.TempDir())
		})
	}
}

// inMountNS runs this test binary's test name again, with env added, in
// a mount namespace of its own, and fails t where it fails.
func inMountNS(t *testing.T, name string, env ...string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^"+name+"$", "-test.v")
	cmd.Env = append(append(os.Environ(), env...), "GORACE=atexit_sleep_ms=0") // a -race child would wait 1 s at exit
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNS}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
}

func readOnlyChild(t *testing.T, mode, dir string) {
	remountOnly = mode == "remount"
	if err := syscall.Mount("", "/", "", syscall.MS_REC|syscall.MS_PRIVATE, ""); err != nil {
		t.Fatal(err)
	}
	a, b, pts, kept := filepath.Join(dir, "a"), filepath.Join(dir, "a", "b"), filepath.Join(dir, "pts"), filepath.Join(dir, "kept")
	for _, m := range []struct{ point, fstype, opts string }{
		{a, "tmpfs", "size=64k"},
		{b, "tmpfs", "size=64k"},
		{b, "tmpfs", "size=64k"}, // stacked on the one before
		{pts, "devpts", "newinstance"},
		{kept, "tmpfs", "size=64k"},
	} {
		if err := os.MkdirAll(m.point, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := syscall.Mount("x", m.point, m.fstype, 0, m.opts); err != nil {
			t.Fatalf("mount %s: %v", m.point, err)
		}
	}
	host, err := readMounts()
	if err != nil {
		t.Fatal(err)
	}
	if err := readOnly(host, func(m mount) bool { return m.fstype == "devpts" || m.point == kept }); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{a, b, "/", os.TempDir()} {
		if err := os.WriteFile(filepath.Join(p, "f"), nil, 0o600); !errors.Is(err, syscall.EROFS) {
			t.Errorf("%s: a write gave %v, want EROFS", p, err)
		}
	}
	ms, err := readMounts()
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range ms {
		ro := m.ro
		switch {
		case m.point == kept:
		case m.fstype == "devpts" && ro && !stackedBelow(ms, m):
			t.Errorf("devpts at %s is read-only", m.point)
		case m.fstype != "devpts" && !ro && (mode == "setattr" || !stackedBelow(ms, m)):
			t.Errorf("%s (%s) is writable", m.point, m.fstype)
		}
	}
}

// stackedBelow reports whether another mount of ms is on m's point after
// it (the remounts, by path, reach only the top one).
func stackedBelow(ms []mount, m mount) bool {
	seen := false
	for _, o := range ms {
		if o.id == m.id {
			seen = true
		} else if seen && o.point == m.point {
			return true
		}
	}
	return false
}
