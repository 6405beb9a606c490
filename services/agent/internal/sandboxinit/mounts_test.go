package sandboxinit

import "testing"

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
