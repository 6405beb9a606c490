package boltcheck

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// write makes a bbolt file at path with bucket "records" holding the
// given values and a nested bucket under it.
func write(t *testing.T, path string, values map[string]string) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists([]byte("records"))
		if err != nil {
			return err
		}
		for k, v := range values {
			if err := b.Put([]byte(k), []byte(v)); err != nil {
				return err
			}
		}
		nb, err := b.CreateBucketIfNotExists([]byte("nested"))
		if err != nil {
			return err
		}
		return nb.Put([]byte("n"), []byte("not a record"))
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
}

// onlyOK accepts the records whose value is "ok".
func onlyOK(bucket, key, value []byte) error {
	if string(value) != "ok" {
		return errors.New("not ok")
	}
	return nil
}

// TestOpen: a good file opens (nested buckets are read, not checked); a
// missing one is made; an empty, a cut, an overwritten file, or one whose
// record the check refuses is ErrDamaged, with nothing opened and no
// panic; a file the process may not read is a FileError, not damaged.
func TestOpen(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.db")
	write(t, good, map[string]string{"a": "ok", "b": "ok"})
	db, err := Open(good, nil, onlyOK)
	if err != nil {
		t.Fatalf("good file: %v", err)
	}
	db.Close()
	db, err = Open(filepath.Join(dir, "new.db"), nil, onlyOK)
	if err != nil {
		t.Fatalf("missing file: %v", err)
	}
	db.Close()

	data, err := os.ReadFile(good)
	if err != nil {
		t.Fatal(err)
	}
	overwritten := append([]byte(nil), data...)
	for i := 4096 * 2; i < len(overwritten); i++ {
		overwritten[i] = 0xff
	}
	refused := filepath.Join(dir, "refused.db")
	write(t, refused, map[string]string{"a": "ok", "b": "bad"})
	for name, content := range map[string][]byte{
		"empty":       {},
		"cut":         data[:4096*2+100],
		"overwritten": overwritten,
	} {
		p := filepath.Join(dir, name+".db")
		if err := os.WriteFile(p, content, 0o600); err != nil {
			t.Fatal(err)
		}
		if db, err := Open(p, nil, onlyOK); !errors.Is(err, ErrDamaged) {
			if db != nil {
				db.Close()
			}
			t.Errorf("%s file: %v, want ErrDamaged", name, err)
		}
	}
	if _, err := Open(refused, nil, onlyOK); !errors.Is(err, ErrDamaged) {
		t.Errorf("refused record: %v, want ErrDamaged", err)
	}
	if os.Geteuid() != 0 {
		locked := filepath.Join(dir, "locked.db")
		write(t, locked, nil)
		if err := os.Chmod(locked, 0); err != nil {
			t.Fatal(err)
		}
		if _, err := Open(locked, nil, nil); err == nil || errors.Is(err, ErrDamaged) || !FileError(err) {
			t.Errorf("unreadable file: %v, want a file error", err)
		}
	}
}
