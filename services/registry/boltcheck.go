package registry

import (
	"fmt"

	bolt "go.etcd.io/bbolt"

	"github.com/bai-sh/bai/pkg/boltcheck"
	"github.com/bai-sh/bai/pkg/events"
)

// errDamaged marks a database file that bbolt cannot read safely (package
// boltcheck): a bad meta page, a file shorter than its pages, a page that
// is not what its parent says, a session that does not decode.
var errDamaged = boltcheck.ErrDamaged

// openChecked opens the projection at path once every reachable page of
// it was read and every session decoded (boltcheck.Open).
func openChecked(path string, opts *bolt.Options) (*bolt.DB, error) {
	return boltcheck.Open(path, opts, func(bucket, k, v []byte) error {
		if string(bucket) != string(bucketSessions) {
			return nil
		}
		var info events.SessionInfo
		if err := events.Unmarshal(v, &info); err != nil {
			return fmt.Errorf("session %q: %v", k, err)
		}
		return nil
	})
}
