package sandboxinit

import (
	"slices"
	"testing"
)

func TestUnescape(t *testing.T) {
	for in, want := range map[string]string{
		"/plain":                "/plain",
		`/a\040b`:               "/a b",
		`/tab\011x\012y\134z`:   "/tab\tx\ny\\z",
		`/end\04`:               `/end\04`,
		`/bad\09x`:              `/bad\09x`,
		`/deleted\040(deleted)`: "/deleted (deleted)",
	} {
		if got := unescape(in); got != want {
			t.Errorf("unescape(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestUnderHolds(t *testing.T) {
	hide := []string{"/var/lib/bai", "/srv/x/"}
	for p, want := range map[string][2]bool{
		"/var/lib/bai":               {true, false},
		"/var/lib/bai/kernels/k-1":   {true, false},
		"/var/lib/baiX":              {false, false},
		"/var/lib":                   {false, true},
		"/":                          {false, true},
		"/srv/x/k":                   {true, false},
		"/srv":                       {false, true},
		"/tmp/TestX/kernels/k-other": {false, false},
	} {
		if u, h := under(p, hide), holds(p, hide); u != want[0] || h != want[1] {
			t.Errorf("%s: under %v holds %v, want %v", p, u, h, want)
		}
	}
}

// TestReadMounts: this process's own mounts parse, / among them.
func TestReadMounts(t *testing.T) {
	ms, err := readMounts()
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range ms {
		if m.point == "/" && m.fstype != "" {
			return
		}
	}
	t.Errorf("no / in %+v", ms)
}

// TestSubtreeTops: one unmount per subtree under the hidden directories,
// children first where stacked on their parent's point, and nothing
// outside them.
func TestSubtreeTops(t *testing.T) {
	ms := []mount{
		{id: "1", parent: "0", point: "/"},
		{id: "2", parent: "1", point: "/tmp"},
		{id: "3", parent: "1", point: "/var/lib/bai/agent/kernels"}, // the kernels' root bind
		{id: "4", parent: "3", point: "/var/lib/bai/agent/kernels/k-1"},
		{id: "5", parent: "3", point: "/var/lib/bai/agent/kernels/k-2"},
		{id: "6", parent: "5", point: "/var/lib/bai/agent/kernels/k-2"}, // stacked on k-2
		{id: "7", parent: "6", point: "/var/lib/bai/agent/kernels/k-2/sub"},
		{id: "8", parent: "1", point: "/srv/hidden/a"}, // another hidden dir, no mount of its own
		{id: "9", parent: "8", point: "/srv/hidden/a/b"},
		{id: "10", parent: "1", point: "/srv/hidden/c"},
		{id: "11", parent: "1", point: "/var/lib/baiX"},
		{id: "12", parent: "3", point: "/var/lib/bai/agent/kernels"}, // stacked on the root bind
	}
	got := subtreeTops(ms, []string{"/var/lib/bai", "/srv/hidden"})
	want := []string{
		"/var/lib/bai/agent/kernels", // 12, stacked: first
		"/srv/hidden/c",
		"/srv/hidden/a",
		"/var/lib/bai/agent/kernels/k-2", // 6, stacked on 5
		"/var/lib/bai/agent/kernels",     // 3, with 4, 5 and 7
	}
	if !slices.Equal(got, want) {
		t.Errorf("tops %q, want %q", got, want)
	}
}
