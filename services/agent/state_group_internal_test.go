package agent

import (
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	bolt "go.etcd.io/bbolt"

	"github.com/bai-sh/bai/pkg/events"
)

// TestGroupCommit: concurrent kernel writes share commits and every one
// of them is stored; a write that fails inside a group fails alone, and
// the others of its group are stored all the same.
func TestGroupCommit(t *testing.T) {
	path := filepath.Join(t.TempDir(), "agent.db")
	st, err := openState(path, false, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	const n = 200
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			if i%10 == 3 {
				errs[i] = st.write(func(tx *bolt.Tx) error {
					if err := tx.Bucket(bucketRuns).Put([]byte(fmt.Sprint("bad/", i)), []byte{1}); err != nil {
						return err
					}
					return errors.New("refused")
				})
				return
			}
			spec := events.SessionSpec{ID: fmt.Sprint("s", i), MainKernelID: fmt.Sprint("k", i)}
			added, err := st.putKernelRuns(kernelRecord{Spec: spec, Phase: phaseRunning, CreatedAt: time.Now()}, "r")
			if err == nil && (len(added) != 1 || !added[0]) {
				err = fmt.Errorf("added %v", added)
			}
			errs[i] = err
		})
	}
	wg.Wait()
	for i, err := range errs {
		if (i%10 == 3) != (err != nil) {
			t.Errorf("write %d: %v", i, err)
		}
	}
	if err := st.close(); err != nil {
		t.Fatal(err)
	}
	st, err = openState(path, false, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	defer st.close()
	recs, err := st.kernels()
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != n-n/10 {
		t.Fatalf("%d kernels stored, want %d", len(recs), n-n/10)
	}
	err = st.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketRuns).Cursor()
		for k, _ := c.First(); k != nil; k, _ = c.Next() {
			if string(k[:4]) == "bad/" {
				return fmt.Errorf("a failed write's key %q is stored", k)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
