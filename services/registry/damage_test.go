package registry

import (
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/rs/zerolog"
	bolt "go.etcd.io/bbolt"

	"github.com/bai-sh/bai/pkg/events"
)

// TestDamagedFileIsRebuiltFromTheLog damages the registry's file while it
// is stopped, in the ways a crash, a full disk or a bad copy leave it; the
// next start sets the file aside and rebuilds every session from the log
// (before: bbolt panicked on every start).
func TestDamagedFileIsRebuiltFromTheLog(t *testing.T) {
	const n = 150
	for _, tc := range []struct {
		name   string
		damage func(t *testing.T, path string)
	}{
		{"truncated to half", func(t *testing.T, path string) {
			fi, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.Truncate(path, fi.Size()/2); err != nil {
				t.Fatal(err)
			}
		}},
		{"garbage over a page in the middle", func(t *testing.T, path string) {
			overwritePage(t, path, func(tx *bolt.Tx) uint64 { return uint64(tx.Bucket(bucketHistory).Root()) })
		}},
		{"garbage over the sessions' root page", func(t *testing.T, path string) {
			overwritePage(t, path, func(tx *bolt.Tx) uint64 { return uint64(tx.Bucket(bucketSessions).Root()) })
		}},
		{"both meta pages overwritten", func(t *testing.T, path string) {
			garbage(t, path, 0, 2*4096)
		}},
		{"zero length", func(t *testing.T, path string) {
			if err := os.Truncate(path, 0); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			svc, stop := h.start()
			const ak = "ak1"
			for i := range n {
				h.enqueue(ak, fmt.Sprintf("s%d", i), fmt.Sprintf("name-%d", i))
			}
			h.lifecycle(ak, "s0", events.StatusRunning)
			h.lifecycle(ak, "s1", events.StatusTerminated)
			waitApplied(t, svc, h.last)
			stop()

			tc.damage(t, h.path)
			svc, stop = h.start()
			waitApplied(t, svc, h.last)
			h.checkAll(ak, n)
			if got := get(t, h.nc, ak, "s0").Status; got != events.StatusRunning {
				t.Errorf("s0 %s", got)
			}
			if got := get(t, h.nc, ak, "name-1").Status; got != events.StatusTerminated {
				t.Errorf("s1 %s", got)
			}
			stop()
			aside, _ := filepath.Glob(h.path + ".damaged-*")
			if len(aside) != 1 {
				t.Errorf("damaged files set aside: %v, want one", aside)
			}
			// The new file is sound: a third start takes it as it is.
			svc, _ = h.start()
			waitApplied(t, svc, h.last)
			h.checkAll(ak, n)
			if again, _ := filepath.Glob(h.path + ".damaged-*"); len(again) != len(aside) {
				t.Errorf("the rebuilt file was set aside too: %v", again)
			}
		})
	}
}

// TestOpenCheckedKeepsFileErrors: a file that cannot be opened for what it
// is not (a lock another process holds) is not taken for damage.
func TestOpenCheckedKeepsFileErrors(t *testing.T) {
	path := filepath.Join(t.TempDir(), "registry.db")
	st, err := openStore(path, true, zerolog.Nop(), "")
	if err != nil {
		t.Fatal(err)
	}
	defer st.close()
	_, err = openChecked(path, &bolt.Options{Timeout: 50e6})
	if err == nil || isDamaged(err) {
		t.Fatalf("open of a locked file: %v", err)
	}
	if aside, _ := filepath.Glob(path + ".damaged-*"); len(aside) != 0 {
		t.Fatalf("set aside: %v", aside)
	}
}

func isDamaged(err error) bool { return err != nil && errors.Is(err, errDamaged) }

// overwritePage fills the page that pick chooses (in a read-only look at
// the file) with random bytes.
func overwritePage(t *testing.T, path string, pick func(tx *bolt.Tx) uint64) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	var id uint64
	var size int
	_ = db.View(func(tx *bolt.Tx) error {
		id, size = pick(tx), db.Info().PageSize
		return nil
	})
	_ = db.Close()
	if id < 2 {
		t.Fatalf("page %d picked", id)
	}
	garbage(t, path, int64(id)*int64(size), size)
}

func garbage(t *testing.T, path string, off int64, n int) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, n)
	_, _ = rand.Read(b)
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}
