package agent

import (
	"errors"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/bai-sh/bai/services/agent/internal/sandboxinit"
)

func TestReconfigureFlagsKeepEveryOption(t *testing.T) {
	for _, c := range []struct {
		opts    []string
		want    []string
		wantErr string
	}{
		{opts: []string{"rw"}, want: []string{"favordynmods"}},
		{opts: []string{"rw", "nsdelegate", "memory_recursiveprot"}, want: []string{"nsdelegate", "memory_recursiveprot", "favordynmods"}},
		{opts: []string{"rw", "seclabel", "nsdelegate"}, want: []string{"nsdelegate", "favordynmods"}},
		{opts: []string{"rw", "nsdelegate", "favordynmods"}, want: nil},
		// An option bai does not know would be cleared: the mount is left.
		{opts: []string{"rw", "nsdelegate", "memory_newthing"}, wantErr: `option "memory_newthing" unknown`},
	} {
		got, err := reconfigureFlags(c.opts)
		switch {
		case c.wantErr != "":
			if err == nil || !strings.Contains(err.Error(), c.wantErr) || !errors.Is(err, errHostCannot) {
				t.Errorf("%v: err %v, want %q", c.opts, err, c.wantErr)
			}
		case err != nil:
			t.Errorf("%v: %v", c.opts, err)
		case !slices.Equal(got, c.want):
			t.Errorf("%v: flags %v, want %v", c.opts, got, c.want)
		}
	}
}

// TestSandboxTurnsFavorDynModsOn: on a root host with cgroup2 mounted, a
// sandbox with cgroups leaves the mount with favordynmods and every option
// it had before; with KeepCgroupMount it does nothing.
func TestSandboxTurnsFavorDynModsOn(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("SKIP: needs root")
	}
	point, before, err := sandboxinit.Cgroup2()
	if err != nil {
		t.Fatal(err)
	}
	if point == "" {
		t.Skip("SKIP: no cgroup2 mount here")
	}
	kept := newSandbox(t.TempDir(), SandboxOptions{KeepCgroupMount: true, Prestart: -1})
	if kept.cgroupMount != "" || kept.cgroupMountErr != nil {
		t.Fatalf("KeepCgroupMount: did %q, err %v", kept.cgroupMount, kept.cgroupMountErr)
	}
	sb := newSandbox(t.TempDir(), SandboxOptions{Prestart: -1})
	if sb.cg == nil {
		t.Skipf("SKIP: no cgroups here: %v", sb.notes)
	}
	if err := sb.cgroupMountErr; err != nil {
		// What a host may not allow is said and left, not failed.
		if errors.Is(err, errHostCannot) {
			t.Skipf("SKIP: %v", err)
		}
		t.Fatal(err)
	}
	_, after, err := sandboxinit.Cgroup2()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(after, "favordynmods") {
		t.Errorf("cgroup2 at %s: options %v, want favordynmods (did %q)", point, after, sb.cgroupMount)
	}
	for _, o := range before {
		if !slices.Contains(after, o) {
			t.Errorf("cgroup2 at %s lost option %q: %v before, %v after", point, o, before, after)
		}
	}
	t.Logf("cgroup2 at %s: %v before, %v after; %s", point, before, after, sb.cgroupMount)
}
