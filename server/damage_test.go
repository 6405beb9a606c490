package server

import (
	"os"
	"path/filepath"
	"sort"
	"testing"

	"github.com/bai-sh/bai/pkg/events"
)

// TestDamagedFilesAtStart: with registry.db cut to its first three pages and the
// agent's state db left empty (what a crash on a full disk leaves), the
// server starts (before: a bbolt panic on every start), both files are set
// aside, ps lists every session (the registry rebuilt from the log) and
// new sessions run.
func TestDamagedFilesAtStart(t *testing.T) {
	dir := t.TempDir()
	r := startServer(t, dir)
	for range 3 {
		r.ok(t, "run", "--rm", "-c", "print(1)", "python")
	}
	r.ok(t, "run", "--enqueue-only", "--name", "queued", "--starts-at", "24h", "python")
	var want []string
	for _, s := range r.list(t) {
		want = append(want, s.ID)
	}
	r.stop()

	// Three pages: the meta pages and one more, of a file that counts more.
	reg := filepath.Join(dir, "registry.db")
	if err := os.Truncate(reg, 3*4096); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(filepath.Join(dir, "agent", "agent.db"), 0); err != nil {
		t.Fatal(err)
	}

	r = startServer(t, dir)
	var got []string
	for _, s := range r.list(t) {
		got = append(got, s.ID)
	}
	sort.Strings(want)
	sort.Strings(got)
	if len(got) != len(want) || len(want) != 4 {
		t.Fatalf("sessions after the rebuild: %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("sessions after the rebuild: %v, want %v", got, want)
		}
	}
	r.waitStatus(t, "queued", events.StatusPending)
	for _, f := range []string{reg, filepath.Join(dir, "agent", "agent.db")} {
		if aside, _ := filepath.Glob(f + ".damaged-*"); len(aside) != 1 {
			t.Errorf("%s set aside: %v", f, aside)
		}
	}
	if out := r.ok(t, "run", "--rm", "-c", "print(2)", "python"); out != "2\n" {
		t.Fatalf("run after the damage: %q", out)
	}
}
