// Package boltcheck opens a bbolt file only once a read-only pass has read
// every page reachable from its meta page. bbolt trusts its file: a
// truncated or overwritten one makes it panic, in Open (its free page
// scan, in a goroutine of its own that nobody can recover) or at the first
// touch of the bad page. The pass runs where a panic is recovered and a
// fault on the mapped file (a page past its end) is a panic too
// (debug.SetPanicOnFault). The agent's state db and the registry's
// projection both open their files through it.
package boltcheck

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"runtime/debug"
	"syscall"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// ErrDamaged marks a database file that bbolt cannot read safely: a bad
// meta page, a file shorter than its pages, a page that is not what its
// parent says, an empty file, a record its owner cannot decode.
var ErrDamaged = errors.New("damaged database file")

// Record checks one value of a top-level bucket (a nested bucket's values
// are read, not checked); an error marks the file damaged. nil checks
// nothing.
type Record func(bucket, key, value []byte) error

// Open opens the bbolt file at path (made when missing) once the
// read-only pass has read every key and value of every bucket, nested
// ones included, and check has accepted each top-level record. A file it
// cannot read returns an error wrapping ErrDamaged. Errors of the file
// itself (permissions, a lock held by another process, the disk) are
// returned as they are (FileError).
func Open(path string, opts *bolt.Options, check Record) (db *bolt.DB, err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if p := recover(); p != nil {
			if db != nil {
				func() {
					defer func() { _ = recover() }()
					_ = db.Close()
				}()
			}
			db, err = nil, fmt.Errorf("%w: %v", ErrDamaged, p)
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
		return nil, fmt.Errorf("%w: the file is empty", ErrDamaged)
	}
	if err := checkFile(path, fi.Size(), opts, check); err != nil {
		return nil, err
	}
	db, err = bolt.Open(path, 0o600, opts)
	if err != nil && !FileError(err) {
		err = fmt.Errorf("%w: %v", ErrDamaged, err)
	}
	return db, err
}

// checkFile is the read-only pass.
func checkFile(path string, size int64, opts *bolt.Options, check Record) error {
	var timeout = bolt.DefaultOptions.Timeout
	if opts != nil {
		timeout = opts.Timeout
	}
	ro, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: timeout})
	if err != nil {
		if FileError(err) {
			return err
		}
		return fmt.Errorf("%w: %v", ErrDamaged, err)
	}
	defer ro.Close()
	return ro.View(func(tx *bolt.Tx) error {
		if tx.Size() > size {
			return fmt.Errorf("%w: the file has %d bytes, its meta page counts %d", ErrDamaged, size, tx.Size())
		}
		return tx.ForEach(func(name []byte, b *bolt.Bucket) error {
			if err := walk(name, b, check); err != nil {
				return fmt.Errorf("%w: bucket %s: %v", ErrDamaged, name, err)
			}
			return nil
		})
	})
}

// walk reads every key and value of b and of its nested buckets, checking
// b's own values with check when b is top-level (name not nil).
func walk(name []byte, b *bolt.Bucket, check Record) error {
	return b.ForEach(func(k, v []byte) error {
		if v == nil {
			if nb := b.Bucket(k); nb != nil {
				return walk(nil, nb, check)
			}
			return nil
		}
		if check != nil && name != nil {
			return check(name, k, v)
		}
		return nil
	})
}

// FileError reports whether err is about the file rather than its
// contents: the operating system's (permissions, the disk), or the lock
// held by another process.
func FileError(err error) bool {
	var pe *fs.PathError
	var errno syscall.Errno
	return errors.Is(err, berrors.ErrTimeout) || errors.As(err, &pe) || errors.As(err, &errno)
}
