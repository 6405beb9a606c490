package registry

import (
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/bai-sh/bai/pkg/events"
	"github.com/bai-sh/bai/pkg/slots"
)

// bucketUsage holds, per access key, the sum of the requested slots of
// its unfinished sessions (counted, below), kept in the transaction that
// projects their events: what a resource policy's total slots limit
// checks, answered without a scan. The numbers of unfinished and pending
// sessions come from bucketCounts.
var bucketUsage = []byte("usage")

// counted reports whether a session in status s counts against its key's
// resource policy: every status but none, the final ones and ERROR.
func counted(s events.Status) bool {
	return s != events.StatusNone && !s.Final() && s != events.StatusError
}

// usageTx is the usage of the keys one applied batch touches, written back
// at its end.
type usageTx struct {
	b     *bolt.Bucket
	byKey map[string]slots.Set
}

func newUsageTx(tx *bolt.Tx) *usageTx {
	return &usageTx{b: tx.Bucket(bucketUsage), byKey: map[string]slots.Set{}}
}

func (u *usageTx) get(ak string) (slots.Set, error) {
	if set, ok := u.byKey[ak]; ok {
		return set, nil
	}
	set := slots.Set{}
	if v := u.b.Get([]byte(ak)); v != nil {
		var m map[string]string
		if err := events.Unmarshal(v, &m); err != nil {
			return nil, fmt.Errorf("usage of %s in registry database: %w", ak, err)
		}
		var err error
		if set, err = slots.ParseMap(m); err != nil {
			return nil, fmt.Errorf("usage of %s in registry database: %w", ak, err)
		}
	}
	u.byKey[ak] = set
	return set, nil
}

// move accounts a session of ak requesting req moving from status from to
// status to. A request that does not parse (the gateway admits none) or a
// sum that overflows counts nothing; a difference is floored at zero.
func (u *usageTx) move(ak string, req map[string]string, from, to events.Status) error {
	in, out := !counted(from) && counted(to), counted(from) && !counted(to)
	if !in && !out || len(req) == 0 {
		return nil
	}
	r, err := slots.ParseMap(req)
	if err != nil {
		return nil
	}
	set, err := u.get(ak)
	if err != nil {
		return err
	}
	for k, q := range r {
		n := set[k]
		switch {
		case in && n+q >= n:
			n += q
		case out:
			n = max(n-q, 0)
		}
		if n == 0 {
			delete(set, k)
		} else {
			set[k] = n
		}
	}
	return nil
}

// flush writes the touched keys' usage back.
func (u *usageTx) flush() error {
	for ak, set := range u.byKey {
		if len(set) == 0 {
			if err := u.b.Delete([]byte(ak)); err != nil {
				return err
			}
			continue
		}
		v, err := events.Marshal(set.Map())
		if err != nil {
			return err
		}
		if err := u.b.Put([]byte(ak), v); err != nil {
			return err
		}
	}
	return nil
}

// initUsage creates the usage bucket, filled from the sessions, in a file
// made before it existed.
func initUsage(tx *bolt.Tx) error {
	if tx.Bucket(bucketUsage) != nil {
		return nil
	}
	if _, err := tx.CreateBucket(bucketUsage); err != nil {
		return err
	}
	u := newUsageTx(tx)
	err := tx.Bucket(bucketSessions).ForEach(func(k, v []byte) error {
		var info events.SessionInfo
		if err := events.Unmarshal(v, &info); err != nil {
			return fmt.Errorf("session %s in registry database: %w", k, err)
		}
		return u.move(info.AccessKey, info.Slots, events.StatusNone, info.Status)
	})
	if err != nil {
		return err
	}
	return u.flush()
}

// usage answers what ak's unfinished sessions hold, and whether session
// sid (when set) is known.
func (st *store) usage(ak, sid string) (events.UsageResponse, error) {
	resp := events.UsageResponse{Slots: map[string]string{}}
	err := st.db.View(func(tx *bolt.Tx) error {
		counts := tx.Bucket(bucketCounts)
		for _, s := range events.AllStatuses {
			if !counted(s) {
				continue
			}
			n := int(getUint(counts, []byte(ak+"/"+string(s))))
			resp.Unfinished += n
			if s == events.StatusPending {
				resp.Pending = n
			}
		}
		if v := tx.Bucket(bucketUsage).Get([]byte(ak)); v != nil {
			if err := events.Unmarshal(v, &resp.Slots); err != nil {
				return fmt.Errorf("usage of %s in registry database: %w", ak, err)
			}
		}
		if sid != "" {
			resp.Known = tx.Bucket(bucketSessions).Get([]byte(ak+"/"+sid)) != nil
		}
		resp.AppliedSeq = getUint(tx.Bucket(bucketMeta), keyAppliedSeq)
		return nil
	})
	return resp, err
}

// usageWait bounds how long a usage query waits for the projection to
// reach the end of the log; past it the answer is busy, never stale.
const usageWait = 5 * time.Second

// handleUsage answers session.usage: what the caller's (or, for an admin,
// another key's) unfinished sessions hold, as of the end of the log (or of
// MinSeq at least).
func (s *Service) handleUsage(ak string, data []byte) (any, error) {
	var req events.UsageRequest
	if err := decode("usage", data, &req); err != nil {
		return nil, err
	}
	if req.SessionID != "" && !events.ValidToken(req.SessionID) {
		return nil, invalid("invalid session id %q", req.SessionID)
	}
	owner, err := s.owner(ak, req.AccessKey)
	if err != nil {
		return nil, err
	}
	caught := false
	if req.MinSeq > 0 {
		caught = s.waitApplied(req.MinSeq, usageWait)
	} else {
		caught = s.catchUp(usageWait)
	}
	if !caught {
		return nil, fmt.Errorf("%w: the registry has not caught up with the session log; retry", events.ErrBusy)
	}
	return s.withStore(func(st *store) (any, error) {
		return st.usage(owner, req.SessionID)
	})
}

// waitApplied waits, at most maxWait, until the projection has applied
// the log up to seq, and reports whether it has.
func (s *Service) waitApplied(seq uint64, maxWait time.Duration) bool {
	timer := time.NewTimer(maxWait)
	defer timer.Stop()
	for {
		s.appliedMu.Lock()
		ch := s.appliedCh
		s.appliedMu.Unlock()
		if s.applied.Load() >= seq {
			return true
		}
		select {
		case <-ch:
		case <-timer.C:
			return false
		}
	}
}
