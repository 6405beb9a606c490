package agent

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestCgroupsParentsComeBack: a kernel's cgroups get their limits, and
// where the parents were removed after the first kernel (by an operator,
// a service manager) the next kernel's create makes them again.
func TestCgroupsParentsComeBack(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("SKIP: cgroups need root")
	}
	c, err := detectCgroups(fmt.Sprintf("bai-test-parents-%d", os.Getpid()))
	if err != nil {
		t.Skipf("SKIP: no cgroups here: %v", err)
	}
	t.Cleanup(func() {
		for _, p := range c.parents {
			_ = syscall.Rmdir(p)
		}
	})
	l := limits{mem: 64 << 20, pids: 32, cpu: 500_000} // half a CPU
	check := func(id string) {
		t.Helper()
		if err := c.create(id, l); err != nil {
			t.Fatalf("create %s: %v", id, err)
		}
		want := map[string]string{"pids.max": "32"}
		if c.v2 {
			want["memory.max"] = "67108864"
			if c.cpuFile {
				want["cpu.max"] = "50000 100000"
			}
		} else {
			want["memory.limit_in_bytes"] = "67108864"
			if c.dir("cpu", id) != "" {
				want["cpu.cfs_quota_us"] = "50000"
				want["cpu.cfs_period_us"] = "100000"
			}
		}
		for file, v := range want {
			ctl := strings.Split(file, ".")[0]
			data, err := os.ReadFile(filepath.Join(c.dir(ctl, id), file))
			if err != nil || strings.TrimSpace(string(data)) != v {
				t.Errorf("%s %s: %q, %v; want %q", id, file, data, err, v)
			}
		}
		if err := c.remove(id); err != nil {
			t.Fatalf("remove %s: %v", id, err)
		}
	}
	check("k1")
	for _, p := range c.parents {
		if err := syscall.Rmdir(p); err != nil {
			t.Fatal(err)
		}
	}
	check("k2")
	if ids, err := c.list(); err != nil || len(ids) != 0 {
		t.Errorf("kernels left: %v, %v", ids, err)
	}
}

// TestSmallFiles: readSmall reads a file of any size whole, and both it
// and writeSmall fail on a missing file with its path and ErrNotExist,
// making nothing.
func TestSmallFiles(t *testing.T) {
	dir := t.TempDir()
	big := bytes.Repeat([]byte("0123456789abcdef"), 1000) // past every buffer
	p := filepath.Join(dir, "big")
	if err := os.WriteFile(p, big, 0o644); err != nil {
		t.Fatal(err)
	}
	if got, err := readSmall(p); err != nil || !bytes.Equal(got, big) {
		t.Errorf("read %d bytes, %v; want %d", len(got), err, len(big))
	}
	if err := writeSmall(p, "x"); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(p); len(got) != len(big) || got[0] != 'x' {
		t.Errorf("after writeSmall: %d bytes starting %q; want the first byte written in place", len(got), got[:1])
	}
	missing := filepath.Join(dir, "missing")
	if _, err := readSmall(missing); !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), missing) {
		t.Errorf("read missing: %v", err)
	}
	if err := writeSmall(missing, "1"); !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), missing) {
		t.Errorf("write missing: %v", err)
	}
	if _, err := os.Stat(missing); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("writeSmall made %s: %v", missing, err)
	}
}
