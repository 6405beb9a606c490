package registry

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"
	bolt "go.etcd.io/bbolt"

	"github.com/bai-sh/bai/pkg/events"
)

var (
	bucketSessions  = []byte("sessions")
	bucketNames     = []byte("names")
	bucketHistory   = []byte("history")
	bucketByChanged = []byte("by_changed")
	bucketCounts    = []byte("counts")
	bucketMeta      = []byte("meta")

	keyAppliedSeq = []byte("applied_seq")
)

// store is the bbolt file that holds the projection.
type store struct {
	db          *bolt.DB
	log         zerolog.Logger
	idleTimeout time.Duration

	// recent holds the sessions applyBatch wrote last, decoded as they
	// are in the file, so that a session's next event does not decode it
	// again (a session's events come a few at a time, over a few
	// batches). Only applyBatch uses it; a failed commit empties it.
	mu     sync.Mutex
	recent map[string]*events.SessionInfo
}

// ledgerPrefix starts the subjects of the scheduler's agent ledgers.
const ledgerPrefix = "bai.session." + events.LedgerOwner + "."

// maxRecent bounds store.recent: past it the map starts again empty.
const maxRecent = 16384

func openStore(path string, noSync bool, log zerolog.Logger, adminAK string) (*store, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("registry database directory: %w", err)
	}
	opts := &bolt.Options{
		Timeout:        5 * time.Second, // another process holds the file
		NoFreelistSync: true,
		FreelistType:   bolt.FreelistMapType,
		NoSync:         noSync,
	}
	db, err := openChecked(path, opts)
	if errors.Is(err, errDamaged) {
		// The registry is a projection of the log: a damaged file is set
		// aside and the projection built again from the log (a file
		// without an applied sequence is read from the log's start).
		aside := path + ".damaged-" + time.Now().UTC().Format("20060102T150405Z")
		if rerr := os.Rename(path, aside); rerr != nil {
			return nil, fmt.Errorf("open registry database %s: %w; moving it aside: %v", path, err, rerr)
		}
		log.Error().Err(err).Str("path", path).Str("moved_to", aside).
			Msg("registry_database_damaged: moved aside, rebuilding the registry from the session log")
		db, err = openChecked(path, opts)
	}
	if err != nil {
		return nil, fmt.Errorf("open registry database %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketSessions, bucketNames, bucketHistory, bucketByChanged, bucketCounts, bucketMeta, bucketDirectory} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		if err := initUsage(tx); err != nil {
			return err
		}
		return initDirectory(tx, adminAK)
	})
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("init registry database %s: %w", path, err)
	}
	return &store{db: db, log: log}, nil
}

func (st *store) close() error { return st.db.Close() }

// appliedSeq is the last stream sequence the file has applied.
func (st *store) appliedSeq() (uint64, error) {
	var seq uint64
	err := st.db.View(func(tx *bolt.Tx) error {
		seq = getUint(tx.Bucket(bucketMeta), keyAppliedSeq)
		return nil
	})
	return seq, err
}

// record is one message of the session log.
type record struct {
	seq     uint64
	subject string
	data    []byte
}

// outcome is what applyBatch did with one record.
type outcome uint8

const (
	outSkipped outcome = iota // at or below the applied sequence: a redelivery
	outApplied                // an event of a known session: projected and in its history
	outIgnored                // a valid event of an unknown session
	outBad                    // undecodable: skipped (and logged)
)

type entry struct {
	info  events.SessionInfo
	dirty bool
}

// applyBatch applies recs, in order, in one transaction that also records
// the last applied sequence. It returns each record's outcome and the
// applied sequence after the batch.
func (st *store) applyBatch(recs []record) ([]outcome, uint64, error) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.recent == nil || len(st.recent) > maxRecent {
		st.recent = make(map[string]*events.SessionInfo)
	}
	out := make([]outcome, len(recs))
	var applied uint64
	cache := make(map[string]*entry)
	err := st.db.Update(func(tx *bolt.Tx) error {
		sessions, names := tx.Bucket(bucketSessions), tx.Bucket(bucketNames)
		history, byChanged, counts := tx.Bucket(bucketHistory), tx.Bucket(bucketByChanged), tx.Bucket(bucketCounts)
		meta := tx.Bucket(bucketMeta)
		usage := newUsageTx(tx)
		applied = getUint(meta, keyAppliedSeq)
		load := func(key string) (*entry, error) {
			if en, ok := cache[key]; ok {
				return en, nil
			}
			en := &entry{}
			if info := st.recent[key]; info != nil {
				// The same as in the file: it was stored from this.
				en.info = *info
			} else if v := sessions.Get([]byte(key)); v != nil {
				if err := events.Unmarshal(v, &en.info); err != nil {
					return nil, fmt.Errorf("session %s in registry database: %w", key, err)
				}
			}
			cache[key] = en
			return en, nil
		}

		for i, r := range recs {
			if r.seq <= applied {
				out[i] = outSkipped
				continue
			}
			applied = r.seq
			if strings.HasPrefix(r.subject, ledgerPrefix) {
				// The scheduler's agent ledgers: no session's.
				out[i] = outIgnored
				continue
			}
			e, err := events.Decode(r.subject, r.data)
			if err != nil {
				st.log.Warn().Err(err).Uint64("seq", r.seq).Str("subject", r.subject).Msg("bad_event_terminated")
				out[i] = outBad
				continue
			}
			key := e.AccessKey + "/" + e.SessionID
			en, err := load(key)
			if err != nil {
				return err
			}
			if refusedFromAgent(&en.info, e) {
				st.log.Warn().Uint64("seq", r.seq).Str("event", string(e.Name)).Str("session_id", e.SessionID).
					Str("agent_id", e.AgentID).Str("placed_on", en.info.AgentID).Msg("event_from_wrong_agent_refused")
				out[i] = outIgnored
				continue
			}
			prevStatus, prevChanged := en.info.Status, en.info.StatusChanged
			if !apply(&en.info, e, r.seq) {
				st.log.Info().Uint64("seq", r.seq).Str("subject", r.subject).Msg("event_of_unknown_session_ignored")
				out[i] = outIgnored
				continue
			}
			out[i] = outApplied
			en.dirty = true
			info := &en.info
			if prevStatus == events.StatusNone {
				if err := ensureUser(tx, e.AccessKey, ""); err != nil {
					return err
				}
			}
			if prevStatus == events.StatusNone && info.Name != "" {
				if err := st.indexName(names, load, info); err != nil {
					return err
				}
			}
			if info.Status != prevStatus || !info.StatusChanged.Equal(prevChanged) {
				if prevStatus != events.StatusNone {
					if err := byChanged.Delete(changedKey(e.AccessKey, e.SessionID, prevChanged)); err != nil {
						return err
					}
					if err := addCount(counts, e.AccessKey, prevStatus, -1); err != nil {
						return err
					}
				}
				if err := byChanged.Put(changedKey(e.AccessKey, e.SessionID, info.StatusChanged), []byte(info.Status)); err != nil {
					return err
				}
				if err := addCount(counts, e.AccessKey, info.Status, 1); err != nil {
					return err
				}
				if err := usage.move(e.AccessKey, info.Slots, prevStatus, info.Status); err != nil {
					return err
				}
			}
			hk := make([]byte, 0, len(key)+9)
			hk = binary.BigEndian.AppendUint64(append(append(hk, key...), '/'), r.seq)
			if err := history.Put(hk, r.data); err != nil {
				return err
			}
		}

		for key, en := range cache {
			if !en.dirty {
				continue
			}
			v, err := events.Marshal(&en.info)
			if err != nil {
				return err
			}
			if err := sessions.Put([]byte(key), v); err != nil {
				return err
			}
		}
		if err := usage.flush(); err != nil {
			return err
		}
		return putUint(meta, keyAppliedSeq, applied)
	})
	if err != nil {
		// What was changed in memory is not in the file.
		st.recent = nil
		return nil, 0, fmt.Errorf("apply events to registry database: %w", err)
	}
	for key, en := range cache {
		if en.dirty {
			st.recent[key] = &en.info
		}
	}
	return out, applied, nil
}

// indexName points the session's name at it, unless the name already
// belongs to a session created later.
func (st *store) indexName(names *bolt.Bucket, load func(string) (*entry, error), info *events.SessionInfo) error {
	nk := []byte(info.AccessKey + "/" + info.Name)
	if sid := names.Get(nk); sid != nil && string(sid) != info.ID {
		other, err := load(info.AccessKey + "/" + string(sid))
		if err != nil {
			return err
		}
		if other.info.CreatedAt.After(info.CreatedAt) {
			return nil
		}
	}
	return names.Put(nk, []byte(info.ID))
}

// changedKey is a session's key in by_changed: most recent first, then by id.
func changedKey(ak, sid string, t time.Time) []byte {
	k := make([]byte, 0, len(ak)+len(sid)+10)
	k = append(append(k, ak...), '/')
	// Flipping the sign bit orders int64 as uint64; inverting puts the
	// most recent first.
	k = binary.BigEndian.AppendUint64(k, ^(uint64(t.UnixNano()) ^ 1<<63))
	return append(append(k, '/'), sid...)
}

func addCount(b *bolt.Bucket, ak string, s events.Status, delta int64) error {
	k := []byte(ak + "/" + string(s))
	n := int64(getUint(b, k)) + delta
	if n <= 0 {
		return b.Delete(k)
	}
	return putUint(b, k, uint64(n))
}

func getUint(b *bolt.Bucket, k []byte) uint64 {
	v := b.Get(k)
	if len(v) != 8 {
		return 0
	}
	return binary.BigEndian.Uint64(v)
}

func putUint(b *bolt.Bucket, k []byte, n uint64) error {
	return b.Put(k, binary.BigEndian.AppendUint64(nil, n))
}

// list returns the sessions of ak in one of statuses (distinct, valid),
// most recently changed first, and how many there are in all.
func (st *store) list(ak string, statuses []events.Status, limit, offset int) (events.ListResponse, error) {
	resp := events.ListResponse{Sessions: []events.SessionInfo{}}
	want := make(map[events.Status]bool, len(statuses))
	for _, s := range statuses {
		want[s] = true
	}
	err := st.db.View(func(tx *bolt.Tx) error {
		counts, sessions := tx.Bucket(bucketCounts), tx.Bucket(bucketSessions)
		for s := range want {
			resp.Total += int(getUint(counts, []byte(ak+"/"+string(s))))
		}
		prefix := []byte(ak + "/")
		skipped := 0
		c := tx.Bucket(bucketByChanged).Cursor()
		for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
			if len(resp.Sessions) >= limit || skipped+len(resp.Sessions) >= resp.Total {
				break
			}
			if !want[events.Status(v)] {
				continue
			}
			if skipped < offset {
				skipped++
				continue
			}
			sk := append(append([]byte(nil), prefix...), k[len(prefix)+9:]...)
			var info events.SessionInfo
			if err := events.Unmarshal(sessions.Get(sk), &info); err != nil {
				return fmt.Errorf("session %s in registry database: %w", sk, err)
			}
			decorate(tx, &info, st.idleTimeout, time.Now())
			resp.Sessions = append(resp.Sessions, info)
		}
		return nil
	})
	return resp, err
}

// lookup finds a session of ak by id, then by name; ok is false when there
// is none.
func lookup(tx *bolt.Tx, ak, ref string, idleTimeout time.Duration) (info events.SessionInfo, ok bool, err error) {
	sessions := tx.Bucket(bucketSessions)
	v := sessions.Get([]byte(ak + "/" + ref))
	if v == nil {
		if sid := tx.Bucket(bucketNames).Get([]byte(ak + "/" + ref)); sid != nil {
			v = sessions.Get([]byte(ak + "/" + string(sid)))
		}
	}
	if v == nil {
		return info, false, nil
	}
	if err := events.Unmarshal(v, &info); err != nil {
		return info, false, fmt.Errorf("session %s/%s in registry database: %w", ak, ref, err)
	}
	decorate(tx, &info, idleTimeout, time.Now())
	if info.Status == events.StatusPending {
		info.QueuePosition = queuePosition(tx, &info)
	}
	return info, true, nil
}

func (st *store) get(ak, ref string) (info events.SessionInfo, ok bool, err error) {
	err = st.db.View(func(tx *bolt.Tx) error {
		info, ok, err = lookup(tx, ak, ref, st.idleTimeout)
		return err
	})
	return info, ok, err
}

// history returns a session and its events in log order.
func (st *store) history(ak, ref string) (resp events.HistoryResponse, ok bool, err error) {
	err = st.db.View(func(tx *bolt.Tx) error {
		resp.Session, ok, err = lookup(tx, ak, ref, st.idleTimeout)
		if err != nil || !ok {
			return err
		}
		resp.Events = []events.Event{}
		prefix := []byte(ak + "/" + resp.Session.ID + "/")
		c := tx.Bucket(bucketHistory).Cursor()
		for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
			var e events.Event
			if err := events.Unmarshal(v, &e); err != nil {
				return fmt.Errorf("history of session %s/%s in registry database: %w", ak, resp.Session.ID, err)
			}
			resp.Events = append(resp.Events, e)
		}
		return nil
	})
	return resp, ok, err
}

// queuePosition counts the PENDING sessions, of every key, enqueued before
// info (a pending session's status changed when it was enqueued), plus one.
func queuePosition(tx *bolt.Tx, info *events.SessionInfo) int {
	pos := 1
	c := tx.Bucket(bucketByChanged).Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		if events.Status(v) != events.StatusPending {
			continue
		}
		i := bytes.IndexByte(k, '/')
		if i < 0 || len(k) < i+10 {
			continue
		}
		t := int64(^binary.BigEndian.Uint64(k[i+1:i+9]) ^ 1<<63)
		if t < info.StatusChanged.UnixNano() {
			pos++
		}
	}
	return pos
}
