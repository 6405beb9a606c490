package agent

import (
	"errors"
	"path/filepath"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"
)

// LocalID is the id New gives an agent without an ID, read without
// building an agent: made from the host name on a fresh data dir, the
// stored one once the state db keeps one.
func TestLocalIDIsTheIDNewTakes(t *testing.T) {
	dir := t.TempDir()
	newID := func() string {
		t.Helper()
		a, err := New(Config{NC: &nats.Conn{}, DataDir: dir, Capacity: map[string]string{"cpu": "1"}})
		if err != nil {
			t.Fatal(err)
		}
		return a.ID()
	}
	fresh, err := LocalID(dir)
	if err != nil {
		t.Fatal(err)
	}
	if want := newID(); fresh != want {
		t.Fatalf("fresh data dir: LocalID %q, New %q", fresh, want)
	}
	st, err := openState(filepath.Join(dir, "agent.db"), true, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.start("agent-stored"); err != nil {
		t.Fatal(err)
	}
	if err := st.close(); err != nil {
		t.Fatal(err)
	}
	got, err := LocalID(dir)
	if err != nil || got != "agent-stored" || newID() != "agent-stored" {
		t.Fatalf("stored id: LocalID %q (%v), New %q", got, err, newID())
	}
	if _, err := LocalID(""); !errors.Is(err, ErrConfig) {
		t.Fatalf("no data dir: %v", err)
	}
}
