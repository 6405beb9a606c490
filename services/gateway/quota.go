package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/bai-sh/bai/pkg/events"
	"github.com/bai-sh/bai/pkg/events/streams"
	"github.com/bai-sh/bai/pkg/slots"
)

// quotas enforces the resource policy of a key at admission. Admissions
// of one key are serialized, held from the count to the acknowledged
// enqueue, so 50 concurrent creates against a limit of 5 admit exactly as
// many as fit: within a gateway by a mutex per key, across gateways by a
// lease per key in the KV bucket AdmissionBucket (taken with Create,
// taken over from a dead gateway with a compare-and-set once expired,
// given back with a revision-checked delete). The count comes from the
// registry's per-key usage (session.usage: unfinished and pending sessions
// and the sum of their slots, kept in the transaction that projects the
// log, so exact at any number of sessions), which it answers only once its
// projection has reached the end of the log as it stood at the query, and
// busy otherwise: every enqueue acknowledged before the count is in it.
type quotas struct {
	nc     *nats.Conn
	keys   *Keys
	leases jetstream.KeyValue
	mu     sync.Mutex
	byAK   map[string]*keyState
}

// keyState is one key's admissions in this gateway. While it holds the
// key's lease without a break, no other gateway admits for the key, so
// every admission since its first check (a full catch-up of the
// registry) is either in the registry's answer or in ledger: later
// checks need not wait for the registry to catch up with the log, only
// to have applied syncSeq. The lease is kept from one admission to the
// next while creates of the key wait here (at most maxHandoffs in a row),
// renewed as it goes.
type keyState struct {
	mu      sync.Mutex
	waiting atomic.Int32

	held     bool // the lease is ours, at revision rev
	rev      uint64
	renewed  time.Time
	handoffs int

	synced  bool // the registry (as of syncSeq) plus ledger count every admission
	syncSeq uint64
	ledger  []admitted
}

// admitted is one enqueue this gateway made while holding the lease.
type admitted struct {
	seq   uint64
	slots slots.Set
}

// maxHandoffs bounds the admissions one gateway makes for a key without
// giving its lease back, so that another gateway gets its turn.
const maxHandoffs = 256

// AdmissionBucket is the KV bucket of the admission leases, one per
// access key ("ak.<access key>") while a gateway admits for it.
const AdmissionBucket = "bai_admission"

// leaseTTL is how long an admission lease holds before another gateway
// may take it over; longer than any create (10s).
const leaseTTL = 30 * time.Second

// lease is the value of an admission lease.
type lease struct {
	Holder string    `json:"holder"`
	Until  time.Time `json:"until"`
}

func newQuotas(ctx context.Context, nc *nats.Conn, js jetstream.JetStream, replicas int) (*quotas, error) {
	keys, err := OpenKeys(ctx, js, replicas)
	if err != nil {
		return nil, err
	}
	leases, err := streams.ProvisionBucket(ctx, js, jetstream.KeyValueConfig{
		Bucket: AdmissionBucket, Description: "bai admission leases, one per access key",
		History: 1, Storage: jetstream.MemoryStorage, Replicas: replicas, MaxValueSize: 1024,
	})
	if err != nil {
		return nil, fmt.Errorf("gateway: admission bucket: %w", err)
	}
	return &quotas{nc: nc, keys: keys, leases: leases, byAK: map[string]*keyState{}}, nil
}

// serialize holds ak's admissions: its mutex in this gateway, then its
// lease in the cluster. It waits for a lease held by another gateway
// until ctx ends (ErrBusy).
func (q *quotas) serialize(ctx context.Context, ak string) (release func(), err error) {
	ks, err := q.hold(ctx, ak)
	if err != nil {
		return nil, err
	}
	return func() { q.unhold(ks, ak, admitted{}, true) }, nil
}

// hold takes ak's mutex, then its lease unless this gateway kept it.
func (q *quotas) hold(ctx context.Context, ak string) (*keyState, error) {
	q.mu.Lock()
	ks, ok := q.byAK[ak]
	if !ok {
		ks = &keyState{}
		q.byAK[ak] = ks
	}
	q.mu.Unlock()
	ks.waiting.Add(1)
	ks.mu.Lock()
	ks.waiting.Add(-1)
	if ks.held && time.Since(ks.renewed) > leaseTTL/3 {
		val, _ := json.Marshal(lease{Holder: "renewed", Until: time.Now().Add(leaseTTL).UTC()})
		if rev, err := q.leases.Update(ctx, "ak."+ak, val, ks.rev); err == nil {
			ks.rev, ks.renewed = rev, time.Now()
		} else {
			ks.held = false // taken over (or unknown): take it again
		}
	}
	if !ks.held {
		rev, err := q.acquire(ctx, ak)
		if err != nil {
			ks.mu.Unlock()
			return nil, err
		}
		ks.held, ks.rev, ks.renewed, ks.handoffs = true, rev, time.Now(), 0
		ks.synced, ks.ledger = false, nil
	}
	return ks, nil
}

// unhold ends one admission: a its enqueue (seq 0: none stored), sure
// false when whether it was stored is unknown. The lease is kept for a
// create of the key waiting here, else given back.
func (q *quotas) unhold(ks *keyState, ak string, a admitted, sure bool) {
	defer ks.mu.Unlock()
	switch {
	case !sure:
		ks.synced = false // the next check catches up with the log
	case a.seq > 0 && ks.synced:
		ks.ledger = append(ks.ledger, a)
	}
	ks.handoffs++
	if ks.waiting.Load() > 0 && ks.handoffs < maxHandoffs {
		return
	}
	dctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	// A lease taken over meanwhile is the other gateway's: the revision
	// check leaves it.
	_ = q.leases.Delete(dctx, "ak."+ak, jetstream.LastRevision(ks.rev))
	ks.held, ks.synced, ks.ledger = false, false, nil
}

// acquire takes ak's admission lease and returns its revision.
func (q *quotas) acquire(ctx context.Context, ak string) (uint64, error) {
	key := "ak." + ak
	holder := events.NewID()
	wait := time.Millisecond
	for {
		val, _ := json.Marshal(lease{Holder: holder, Until: time.Now().Add(leaseTTL).UTC()})
		rev, err := q.leases.Create(ctx, key, val)
		if err == nil {
			return rev, nil
		}
		if !errors.Is(err, jetstream.ErrKeyExists) {
			return 0, leaseErr(ctx, ak, err)
		}
		e, err := q.leases.Get(ctx, key)
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
			continue // given back meanwhile
		case err != nil:
			return 0, leaseErr(ctx, ak, err)
		}
		var held lease
		if json.Unmarshal(e.Value(), &held) != nil || time.Now().After(held.Until) {
			// Its gateway died holding it: take it over, unless
			// another gateway does first.
			if rev, err := q.leases.Update(ctx, key, val, e.Revision()); err == nil {
				return rev, nil
			}
		}
		select {
		case <-ctx.Done():
			return 0, leaseErr(ctx, ak, ctx.Err())
		case <-time.After(wait):
		}
		wait = min(2*wait, 50*time.Millisecond)
	}
}

func leaseErr(ctx context.Context, ak string, err error) error {
	if ctx.Err() != nil {
		return events.Errorf(events.ErrBusy, "another admission for %s is in progress; retry", ak)
	}
	return events.Errorf(events.ErrInternal, "could not take the admission lease of %s: %v", ak, err)
}

// policyOf is the policy of ak; nil when ak has no keypair (a gateway
// run without the auth service) or its policy sets no limit.
func (q *quotas) policyOf(ctx context.Context, ak string) (*Policy, error) {
	kp, _, err := q.keys.Get(ctx, ak)
	if errors.Is(err, ErrNoKeypair) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	p, err := q.keys.GetPolicy(ctx, kp.Policy)
	if err != nil {
		return nil, err
	}
	if p.MaxConcurrentSessions == 0 && p.MaxPendingSessions == 0 && len(p.TotalSlots) == 0 {
		return nil, nil
	}
	return p, nil
}

// admit checks spec against ak's policy. On success the caller must call
// release once the session is enqueued (seq, sure: see unhold) or not.
func (q *quotas) admit(ctx context.Context, ak string, spec *events.SessionSpec) (release func(seq uint64, sure bool), err error) {
	none := func(uint64, bool) {}
	if q == nil {
		return none, nil
	}
	p, err := q.policyOf(ctx, ak)
	if err != nil {
		return nil, storeError("the resource policy of "+ak, err)
	}
	if p == nil {
		return none, nil
	}
	ks, err := q.hold(ctx, ak)
	if err != nil {
		return nil, err
	}
	if err := q.check(ctx, ak, p, spec, ks); err != nil {
		q.unhold(ks, ak, admitted{}, true)
		return nil, err
	}
	req, _ := slots.ParseMap(spec.Slots)
	return func(seq uint64, sure bool) { q.unhold(ks, ak, admitted{seq: seq, slots: req}, sure) }, nil
}

// check counts ak's usage, from the registry plus, while this gateway has
// held the lease without a break, its own enqueues the registry has not
// applied yet (ks.ledger). Until then the other events of ak that the
// registry has not applied are not counted: they only release (a session
// placed or ended), save an ERROR session being terminated (counted again
// while TERMINATING, as before its error); so the count is never under
// what holds, but for that moment.
func (q *quotas) check(ctx context.Context, ak string, p *Policy, spec *events.SessionSpec, ks *keyState) error {
	subj, err := events.ServiceAPISubject(ak, events.OpSessionUsage)
	if err != nil {
		return events.Errorf(events.ErrInvalid, "%v", err)
	}
	ureq := events.UsageRequest{SessionID: spec.ID}
	if ks.synced {
		ureq.MinSeq = ks.syncSeq
	}
	data, _ := json.Marshal(ureq)
	msg, err := q.nc.RequestWithContext(ctx, subj, data)
	if err != nil {
		return events.Errorf(events.ErrBusy, "cannot check the resource policy now (registry: %v); retry", err)
	}
	if apiErr := events.ErrorFromHeader(map[string][]string(msg.Header)); apiErr != nil {
		return events.Errorf(events.ErrBusy, "cannot check the resource policy now (registry: %v); retry", apiErr)
	}
	var usage events.UsageResponse
	if err := json.Unmarshal(msg.Data, &usage); err != nil {
		return events.Errorf(events.ErrInternal, "registry answer: %v", err)
	}
	if usage.Known {
		return nil // a retried create: the log answers it as a duplicate
	}
	used, err := slots.ParseMap(usage.Slots)
	if err != nil {
		return events.Errorf(events.ErrInternal, "registry answer: %v", err)
	}
	if used == nil {
		used = slots.Set{}
	}
	if !ks.synced {
		ks.synced, ks.ledger = true, nil // the answer counts all before it
	}
	ks.syncSeq = max(ks.syncSeq, usage.AppliedSeq)
	keep := ks.ledger[:0]
	for _, a := range ks.ledger {
		if a.seq <= usage.AppliedSeq {
			continue // in the registry's answer
		}
		keep = append(keep, a)
		usage.Unfinished++
		usage.Pending++
		if sum, err := used.Add(a.slots); err == nil {
			used = sum
		}
	}
	ks.ledger = keep
	pending := usage.Pending
	if p.MaxConcurrentSessions > 0 && usage.Unfinished >= p.MaxConcurrentSessions {
		return events.Errorf(events.ErrQuota, "You cannot run more than %d concurrent sessions", p.MaxConcurrentSessions)
	}
	if p.MaxPendingSessions > 0 && pending >= p.MaxPendingSessions {
		return events.Errorf(events.ErrQuota, "You cannot have more than %d pending sessions", p.MaxPendingSessions)
	}
	if len(p.TotalSlots) > 0 {
		limit, err := slots.ParseMap(p.TotalSlots)
		if err != nil {
			return events.Errorf(events.ErrInternal, "policy %s: %v", p.Name, err)
		}
		req, err := slots.ParseMap(spec.Slots)
		if err != nil {
			return events.Errorf(events.ErrInvalid, "resource slots: %v", err)
		}
		keys := make([]string, 0, len(limit))
		for k := range limit {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			if used[k]+req[k] > limit[k] || used[k]+req[k] < used[k] {
				return events.Errorf(events.ErrQuota, "Your resource request exceeds the total resource slots of your policy %q: %s %s in use + %s requested > %s",
					p.Name, k, slots.FormatValue(k, used[k]), slots.FormatValue(k, req[k]), slots.FormatValue(k, limit[k]))
			}
		}
	}
	return nil
}

// fromOtherAgent reports whether e, the last event of its session, claims
// an agent other than the one the session was scheduled on: a forged
// event, which the scheduler and registry ignore, so terminate must too.
func (s *Service) fromOtherAgent(ctx context.Context, e *events.Event) bool {
	if e.AgentID == "" || e.Name == events.EventScheduled {
		return false
	}
	filter, err := events.AgentWorkSubject(e.AccessKey, e.SessionID, events.EventScheduled, "x")
	if err != nil {
		return false
	}
	raw, err := s.stream.GetLastMsgForSubject(ctx, strings.TrimSuffix(filter, "x")+"*")
	if err != nil {
		return false
	}
	placed, err := events.Decode(raw.Subject, raw.Data)
	return err == nil && events.FromOtherAgent(placed.AgentID, e)
}
