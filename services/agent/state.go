package agent

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
	bolt "go.etcd.io/bbolt"

	"github.com/bai-sh/bai/pkg/events"
)

// Buckets of the state db.
var (
	bucketMeta    = []byte("meta")    // "id", "epoch"
	bucketKernels = []byte("kernels") // kernel id → kernelRecord JSON
	bucketRuns    = []byte("runs")    // kernel id + "/" + run id → ""
	bucketGone    = []byte("gone")    // kernel id → terminated at (unix seconds)

	keyID    = []byte("id")
	keyEpoch = []byte("epoch")
)

// goneKeep is how long a terminated kernel id is remembered, so that a late
// duplicate placement never brings it back.
const goneKeep = 7 * 24 * time.Hour

// Phases of a kernel in the state.
const (
	phaseStarting = "starting" // being started; written by versions before the record at RUNNING only
	phaseRunning  = "running"  // session_started was published
)

// kernelRecord is a kernel as the state keeps it.
type kernelRecord struct {
	Spec      events.SessionSpec `json:"spec"`
	Phase     string             `json:"phase"`
	CreatedAt time.Time          `json:"created_at"`
}

// state is the agent's local bbolt store.
type state struct {
	db *bolt.DB

	// handled is the work cursor: every work queue message up to this
	// sequence has been handled. It is saved with every kernel write (for
	// free) and by saveWork; a saved value behind the truth only hands
	// some work again, which the handlers absorb.
	handled atomic.Uint64
	mu      sync.Mutex
	saved   uint64 // the cursor in the db
	hasWork bool   // whether the db has a cursor at all
	// stream is the work queue the cursor counts in: its creation time
	// (Unix ns); a queue made again (a NATS store lost) starts at 1.
	stream uint64

	// Group commit (write): writes asked while one commits wait and go
	// together in the next transaction, one fsync for all of them.
	gmu        sync.Mutex
	queue      []*pendingWrite
	committing bool
}

// pendingWrite is one write waiting for its group's commit.
type pendingWrite struct {
	fn   func(*bolt.Tx) error
	err  error
	done chan struct{}
}

// write runs fn in a write transaction, with the other writes asked
// meanwhile (a group commit: concurrent kernel starts and ends share an
// fsync; a lone write commits at once, as db.Update, never after a
// delay as db.Batch). fn may run more than once: when one of a group
// fails, each runs again alone, and only its own error is its caller's.
func (st *state) write(fn func(*bolt.Tx) error) error {
	p := &pendingWrite{fn: fn, done: make(chan struct{})}
	st.gmu.Lock()
	st.queue = append(st.queue, p)
	if st.committing {
		st.gmu.Unlock()
		<-p.done
		return p.err
	}
	st.committing = true
	for len(st.queue) > 0 {
		group := st.queue
		st.queue = nil
		st.gmu.Unlock()
		st.commit(group)
		st.gmu.Lock()
	}
	st.committing = false
	st.gmu.Unlock()
	return p.err
}

// commit commits a group in one transaction, or, when a write of it
// fails, each write alone.
func (st *state) commit(group []*pendingWrite) {
	err := st.db.Update(func(tx *bolt.Tx) error {
		for _, p := range group {
			if err := p.fn(tx); err != nil {
				return err
			}
		}
		return nil
	})
	for _, p := range group {
		if err != nil && len(group) > 1 {
			p.err = st.db.Update(p.fn)
		} else {
			p.err = err
		}
		close(p.done)
	}
}

// defaultOpenTimeout bounds the wait for a state db another process holds.
const defaultOpenTimeout = 5 * time.Second

// openState opens the state db at path. A damaged one (see openChecked) is
// set aside as path.damaged-<time>, and a new one made with what could be
// read of it (salvage): the kernels that still decode are adopted as
// usual, the runtime's others are orphans. An epoch that could not be read
// starts again at the Unix time, above any epoch counted before. It never
// panics on what the file holds.
func openState(path string, noSync bool, log zerolog.Logger) (*state, error) {
	opts := &bolt.Options{Timeout: defaultOpenTimeout, NoSync: noSync}
	db, err := openChecked(path, opts)
	var saved *salvaged
	if errors.Is(err, errDamaged) {
		aside := path + ".damaged-" + time.Now().UTC().Format("20060102T150405Z")
		if rerr := os.Rename(path, aside); rerr != nil {
			return nil, fmt.Errorf("open state db %s: %w; moving it aside: %v", path, err, rerr)
		}
		saved, _ = salvage(aside, defaultOpenTimeout)
		log.Error().Err(err).Str("path", path).Str("moved_to", aside).
			Int("kernels_recovered", len(saved.buckets[string(bucketKernels)])).
			Bool("kernels_complete", saved.complete[string(bucketKernels)]).
			Msg("agent_state_damaged: moved aside, starting from what could be read of it; kernels the runtime has that it lost are orphans")
		db, err = openChecked(path, opts)
	}
	if err != nil {
		return nil, fmt.Errorf("open state db %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketMeta, bucketKernels, bucketRuns, bucketGone} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		if saved == nil {
			return nil
		}
		for name, kvs := range saved.buckets {
			b := tx.Bucket([]byte(name))
			for _, kv := range kvs {
				if err := b.Put(kv[0], kv[1]); err != nil {
					return err
				}
			}
		}
		if v := saved.get(bucketMeta, keyEpoch); len(v) != 8 {
			return tx.Bucket(bucketMeta).Put(keyEpoch, binary.BigEndian.AppendUint64(nil, uint64(time.Now().Unix())))
		}
		return nil
	})
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("init state db %s: %w", path, err)
	}
	return &state{db: db}, nil
}

// storedID reads the agent id kept in the state db at path without holding
// it open; "" when there is no db or no id. A damaged db gives what can be
// read of it (openState sets it aside).
func storedID(path string) (string, error) {
	fi, err := os.Stat(path)
	if errors.Is(err, os.ErrNotExist) || (err == nil && fi.Size() == 0) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("state db %s: %w", path, err)
	}
	// A lock held elsewhere or a file it may not read is an error; the
	// contents, sound or not, are read as far as they go.
	saved, err := salvage(path, time.Second)
	if err != nil {
		return "", fmt.Errorf("open state db %s: %w", path, err)
	}
	return string(saved.get(bucketMeta, keyID)), nil
}

func (st *state) close() error { return st.db.Close() }

// start stores the agent id and bumps the epoch, returning the new one.
func (st *state) start(id string) (uint64, error) {
	var epoch uint64
	err := st.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketMeta)
		if v := b.Get(keyEpoch); len(v) == 8 {
			epoch = binary.BigEndian.Uint64(v)
		}
		epoch++
		if err := b.Put(keyEpoch, binary.BigEndian.AppendUint64(nil, epoch)); err != nil {
			return err
		}
		return b.Put(keyID, []byte(id))
	})
	if err != nil {
		return 0, fmt.Errorf("bump agent epoch: %w", err)
	}
	return epoch, nil
}

// kernels lists every kernel in the state.
func (st *state) kernels() ([]kernelRecord, error) {
	var recs []kernelRecord
	err := st.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketKernels).ForEach(func(k, v []byte) error {
			var r kernelRecord
			if err := events.Unmarshal(v, &r); err != nil {
				return fmt.Errorf("kernel %s: %w", k, err)
			}
			recs = append(recs, r)
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("read kernels: %w", err)
	}
	return recs, nil
}

// known reports whether the kernel is in the state or was terminated.
func (st *state) known(kernelID string) (bool, error) {
	var ok bool
	err := st.db.View(func(tx *bolt.Tx) error {
		k := []byte(kernelID)
		ok = tx.Bucket(bucketKernels).Get(k) != nil || tx.Bucket(bucketGone).Get(k) != nil
		return nil
	})
	return ok, err
}

// putKernelRuns stores the kernel and, in the same transaction, records
// the runs (as addRun does); added says which of them were new.
func (st *state) putKernelRuns(r kernelRecord, runIDs ...string) (added []bool, err error) {
	data, err := events.Marshal(r)
	if err != nil {
		return nil, err
	}
	err = st.update(func(tx *bolt.Tx) error {
		added = added[:0]
		runs := tx.Bucket(bucketRuns)
		for _, id := range runIDs {
			k := []byte(r.Spec.MainKernelID + "/" + id)
			fresh := runs.Get(k) == nil
			added = append(added, fresh)
			if fresh {
				if err := runs.Put(k, []byte{1}); err != nil {
					return err
				}
			}
		}
		return tx.Bucket(bucketKernels).Put([]byte(r.Spec.MainKernelID), data)
	})
	if err != nil {
		return nil, fmt.Errorf("store kernel %s: %w", r.Spec.MainKernelID, err)
	}
	return added, nil
}

// removeKernel forgets the kernel and its runs, and remembers that it is
// gone.
func (st *state) removeKernel(kernelID string, now time.Time) error {
	err := st.update(func(tx *bolt.Tx) error {
		k := []byte(kernelID)
		if err := tx.Bucket(bucketKernels).Delete(k); err != nil {
			return err
		}
		runs := tx.Bucket(bucketRuns)
		prefix := []byte(kernelID + "/")
		c := runs.Cursor()
		for rk, _ := c.Seek(prefix); rk != nil && len(rk) >= len(prefix) && string(rk[:len(prefix)]) == string(prefix); rk, _ = c.Seek(prefix) {
			if err := runs.Delete(rk); err != nil {
				return err
			}
		}
		return tx.Bucket(bucketGone).Put(k, binary.BigEndian.AppendUint64(nil, uint64(now.Unix())))
	})
	if err != nil {
		return fmt.Errorf("remove kernel %s: %w", kernelID, err)
	}
	return nil
}

// addRun records a run of a kernel; false when it was recorded before.
func (st *state) addRun(kernelID, runID string) (bool, error) {
	var added bool
	err := st.write(func(tx *bolt.Tx) error {
		added = false
		b := tx.Bucket(bucketRuns)
		k := []byte(kernelID + "/" + runID)
		if b.Get(k) != nil {
			return nil
		}
		added = true
		return b.Put(k, []byte{1})
	})
	if err != nil {
		return false, fmt.Errorf("record run %s of kernel %s: %w", runID, kernelID, err)
	}
	return added, nil
}

// pruneGone forgets terminated kernels older than before.
func (st *state) pruneGone(before time.Time) error {
	return st.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketGone)
		var old [][]byte
		err := b.ForEach(func(k, v []byte) error {
			if len(v) == 8 && int64(binary.BigEndian.Uint64(v)) < before.Unix() {
				old = append(old, append([]byte(nil), k...))
			}
			return nil
		})
		if err != nil {
			return err
		}
		for _, k := range old {
			if err := b.Delete(k); err != nil {
				return err
			}
		}
		return nil
	})
}

// metaResume is the stream sequence the work consumer must be made again
// from, while it is being reset (between its delete and its creation).
var metaResume = []byte("resume")

// resumeSeq is the stored resume sequence; 0 when none.
func (st *state) resumeSeq() (uint64, error) {
	var seq uint64
	err := st.db.View(func(tx *bolt.Tx) error {
		if v := tx.Bucket(bucketMeta).Get(metaResume); len(v) == 8 {
			seq = binary.BigEndian.Uint64(v)
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("state: read resume sequence: %w", err)
	}
	return seq, nil
}

// setResumeSeq stores the resume sequence; 0 clears it.
func (st *state) setResumeSeq(seq uint64) error {
	err := st.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketMeta)
		if seq == 0 {
			return b.Delete(metaResume)
		}
		return b.Put(metaResume, binary.BigEndian.AppendUint64(nil, seq))
	})
	if err != nil {
		return fmt.Errorf("state: store resume sequence: %w", err)
	}
	return nil
}

// metaWork is the saved work cursor (see state.handled); metaWorkStream
// the work queue it counts in (state.stream).
var (
	metaWork       = []byte("work")
	metaWorkStream = []byte("work_stream")
)

// loadWork loads the saved work cursor into handled; ok is false when the
// db has none (an agent that never made its consumer).
func (st *state) loadWork() (ok bool, err error) {
	var seq, stream uint64
	err = st.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketMeta)
		if v := b.Get(metaWork); len(v) == 8 {
			seq, ok = binary.BigEndian.Uint64(v), true
		}
		if v := b.Get(metaWorkStream); len(v) == 8 {
			stream = binary.BigEndian.Uint64(v)
		}
		return nil
	})
	if err != nil {
		return false, fmt.Errorf("state: read work cursor: %w", err)
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	st.saved, st.hasWork, st.stream = seq, ok, stream
	st.handled.Store(seq)
	return ok, nil
}

// knowsWork reports whether the db has a work cursor, and the work queue
// it counts in (0: not recorded).
func (st *state) knowsWork() (bool, uint64) {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.hasWork, st.stream
}

// resetWork sets and saves the work cursor at seq of work queue stream,
// even below where it was.
func (st *state) resetWork(seq, stream uint64) error {
	err := st.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketMeta)
		if err := b.Put(metaWork, binary.BigEndian.AppendUint64(nil, seq)); err != nil {
			return err
		}
		return b.Put(metaWorkStream, binary.BigEndian.AppendUint64(nil, stream))
	})
	if err != nil {
		return fmt.Errorf("state: save work cursor: %w", err)
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	st.handled.Store(seq)
	st.saved, st.hasWork, st.stream = seq, true, stream
	return nil
}

// update runs fn in a write transaction that also saves the work cursor
// when it moved.
func (st *state) update(fn func(tx *bolt.Tx) error) error {
	var wrote uint64
	err := st.write(func(tx *bolt.Tx) error {
		wrote = 0
		if err := fn(tx); err != nil {
			return err
		}
		st.mu.Lock()
		saved := st.saved
		st.mu.Unlock()
		if h := st.handled.Load(); h > saved {
			wrote = h
			return tx.Bucket(bucketMeta).Put(metaWork, binary.BigEndian.AppendUint64(nil, h))
		}
		return nil
	})
	if err == nil && wrote > 0 {
		st.mu.Lock()
		st.saved = max(st.saved, wrote)
		st.mu.Unlock()
	}
	return err
}

// saveWork saves the work cursor if it moved since it was last saved.
func (st *state) saveWork() error {
	st.mu.Lock()
	moved := st.handled.Load() > st.saved
	st.mu.Unlock()
	if !moved {
		return nil
	}
	if err := st.update(func(*bolt.Tx) error { return nil }); err != nil {
		return fmt.Errorf("state: save work cursor: %w", err)
	}
	return nil
}

// raiseEpoch stores epoch min unless the stored one is higher; it returns
// the stored epoch.
func (st *state) raiseEpoch(min uint64) (uint64, error) {
	epoch := min
	err := st.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketMeta)
		if v := b.Get(keyEpoch); len(v) == 8 && binary.BigEndian.Uint64(v) > epoch {
			epoch = binary.BigEndian.Uint64(v)
			return nil
		}
		return b.Put(keyEpoch, binary.BigEndian.AppendUint64(nil, epoch))
	})
	if err != nil {
		return 0, fmt.Errorf("raise agent epoch: %w", err)
	}
	return epoch, nil
}
