package agent

import (
	"fmt"
	"runtime/debug"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/bai-sh/bai/pkg/boltcheck"
	"github.com/bai-sh/bai/pkg/events"
)

// errDamaged marks a state db that bbolt cannot read safely (package
// boltcheck): a bad meta page, a file shorter than its pages, a page that
// is not what its parent says, a kernel record that does not decode.
var errDamaged = boltcheck.ErrDamaged

// openChecked opens the state db at path once every reachable page of it
// was read and every kernel record decoded (boltcheck.Open).
func openChecked(path string, opts *bolt.Options) (*bolt.DB, error) {
	return boltcheck.Open(path, opts, func(bucket, k, v []byte) error {
		if string(bucket) != string(bucketKernels) {
			return nil
		}
		var r kernelRecord
		if err := events.Unmarshal(v, &r); err != nil {
			return fmt.Errorf("kernel %q: %v", k, err)
		}
		return nil
	})
}

// fileError reports whether err is about the file rather than its
// contents (boltcheck.FileError).
func fileError(err error) bool { return boltcheck.FileError(err) }

// salvaged is what could be read from a damaged state db: each bucket's
// readable entries, and whether a bucket could be read to its end.
type salvaged struct {
	buckets  map[string][][2][]byte
	complete map[string]bool
}

// salvage reads what it can of the state db at path, bucket by bucket,
// read-only; a bucket that breaks off keeps the entries read before (a
// kernel record that does not decode is left out). Nothing of it panics.
// The error is the open's, when it is about the file (fileError).
func salvage(path string, timeout time.Duration) (*salvaged, error) {
	s := &salvaged{buckets: map[string][][2][]byte{}, complete: map[string]bool{}}
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	var db *bolt.DB
	var err error
	func() {
		defer func() { _ = recover() }()
		if db, err = bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: timeout}); err != nil {
			db = nil
		}
	}()
	if db == nil {
		if err != nil && fileError(err) {
			return s, err
		}
		return s, nil
	}
	defer func() {
		defer func() { _ = recover() }()
		_ = db.Close()
	}()
	for _, name := range [][]byte{bucketMeta, bucketKernels, bucketRuns, bucketGone} {
		func() {
			defer func() { _ = recover() }()
			_ = db.View(func(tx *bolt.Tx) error {
				b := tx.Bucket(name)
				if b == nil {
					return nil
				}
				err := b.ForEach(func(k, v []byte) error {
					if v == nil {
						return nil
					}
					if string(name) == string(bucketKernels) {
						var r kernelRecord
						if events.Unmarshal(v, &r) != nil || r.Spec.MainKernelID != string(k) {
							return nil
						}
					}
					s.buckets[string(name)] = append(s.buckets[string(name)], [2][]byte{append([]byte(nil), k...), append([]byte(nil), v...)})
					return nil
				})
				s.complete[string(name)] = err == nil
				return nil
			})
		}()
	}
	return s, nil
}

// get is the salvaged value of key in bucket; nil when it was not read.
func (s *salvaged) get(bucket, key []byte) []byte {
	for _, kv := range s.buckets[string(bucket)] {
		if string(kv[0]) == string(key) {
			return kv[1]
		}
	}
	return nil
}
