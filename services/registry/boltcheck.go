package registry

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"runtime/debug"
	"syscall"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"github.com/bai-sh/bai/pkg/events"
)

// errDamaged marks a database file that bbolt cannot read safely: a bad
// meta page, a file shorter than its pages, a page that is not what its
// parent says, a session that does not decode.
var errDamaged = errors.New("damaged database file")

// openChecked opens the bbolt file at path only once a read-only pass has
// read every page that is reachable from its meta page: bbolt trusts its
// file, and a truncated or overwritten one makes it panic, in Open (its
// free page scan, in a goroutine of its own that nobody can recover) or at
// the first touch of the bad page. The pass runs here, where a panic is
// recovered and a fault on the mapped file (a page past its end) is a
// panic too (debug.SetPanicOnFault); a file it cannot read returns an
// error wrapping errDamaged. Errors of the file itself (permissions, a
// lock held by another process, the disk) are returned as they are.
func openChecked(path string, opts *bolt.Options) (db *bolt.DB, err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if p := recover(); p != nil {
			if db != nil {
				func() {
					defer func() { _ = recover() }()
					_ = db.Close()
				}()
			}
			db, err = nil, fmt.Errorf("%w: %v", errDamaged, p)
		}
	}()
	fi, err := os.Stat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return bolt.Open(path, 0o600, opts)
	case err != nil:
		return nil, err
	case fi.Size() == 0:
		// bbolt writes its meta pages as it creates a file: an empty one
		// is what a crash or a full disk left.
		return nil, fmt.Errorf("%w: the file is empty", errDamaged)
	}
	if err := checkFile(path, fi.Size(), opts); err != nil {
		return nil, err
	}
	db, err = bolt.Open(path, 0o600, opts)
	if err != nil && !fileError(err) {
		err = fmt.Errorf("%w: %v", errDamaged, err)
	}
	return db, err
}

// checkFile reads every reachable page of the file read-only: each key and
// value of each bucket, and decodes each session.
func checkFile(path string, size int64, opts *bolt.Options) error {
	ro, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: opts.Timeout})
	if err != nil {
		if fileError(err) {
			return err
		}
		return fmt.Errorf("%w: %v", errDamaged, err)
	}
	defer ro.Close()
	return ro.View(func(tx *bolt.Tx) error {
		if tx.Size() > size {
			return fmt.Errorf("%w: the file has %d bytes, its meta page counts %d", errDamaged, size, tx.Size())
		}
		return tx.ForEach(func(name []byte, b *bolt.Bucket) error {
			if err := walkBucket(b, string(name) == string(bucketSessions)); err != nil {
				return fmt.Errorf("%w: bucket %s: %v", errDamaged, name, err)
			}
			return nil
		})
	})
}

// walkBucket reads every key and value of b and of its nested buckets.
func walkBucket(b *bolt.Bucket, sessions bool) error {
	return b.ForEach(func(k, v []byte) error {
		if v == nil {
			if nb := b.Bucket(k); nb != nil {
				return walkBucket(nb, false)
			}
			return nil
		}
		if sessions {
			var info events.SessionInfo
			if err := events.Unmarshal(v, &info); err != nil {
				return fmt.Errorf("session %q: %v", k, err)
			}
		}
		return nil
	})
}

// fileError reports whether err is about the file rather than its
// contents: the operating system's (permissions, the disk), or the lock
// held by another process.
func fileError(err error) bool {
	var pe *fs.PathError
	var errno syscall.Errno
	return errors.Is(err, berrors.ErrTimeout) || errors.As(err, &pe) || errors.As(err, &errno)
}
