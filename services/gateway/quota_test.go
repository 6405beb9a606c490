package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/bai-sh/bai/internal/natstest"
	"github.com/bai-sh/bai/pkg/events"
	"github.com/bai-sh/bai/pkg/slots"
)

// TestQuotaChecks runs the policy checks against a registry stand-in that
// answers session.usage with fixed figures: two pending sessions of cpu=1
// mem=1g and a running one of cpu=2 mem=2g.
func TestQuotaChecks(t *testing.T) {
	nc := natstest.Connect(t, natstest.RunServer(t))
	js, _ := jetstream.New(nc)
	ctx := context.Background()
	q, err := newQuotas(ctx, nc, js, 0)
	if err != nil {
		t.Fatal(err)
	}
	var asked events.UsageRequest
	var applied uint64
	sub, err := nc.Subscribe(events.ServiceAPIPattern(events.OpSessionUsage), func(m *nats.Msg) {
		asked = events.UsageRequest{}
		_ = json.Unmarshal(m.Data, &asked)
		data, _ := json.Marshal(events.UsageResponse{Unfinished: 3, Pending: 2, AppliedSeq: applied,
			Slots: map[string]string{"cpu": "4", "mem": "4g"}, Known: asked.SessionID == "r1"})
		_ = m.Respond(data)
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()

	spec := &events.SessionSpec{ID: "new", Slots: map[string]string{"cpu": "1", "mem": "1g"}}
	for name, c := range map[string]struct {
		policy Policy
		want   string
	}{
		"no limit":       {Policy{Name: "p"}, ""},
		"concurrent ok":  {Policy{Name: "p", MaxConcurrentSessions: 4}, ""},
		"concurrent":     {Policy{Name: "p", MaxConcurrentSessions: 3}, "You cannot run more than 3 concurrent sessions"},
		"pending":        {Policy{Name: "p", MaxPendingSessions: 2}, "You cannot have more than 2 pending sessions"},
		"pending ok":     {Policy{Name: "p", MaxPendingSessions: 3}, ""},
		"slots":          {Policy{Name: "p", TotalSlots: map[string]string{"mem": "4.5g"}}, `policy "p": mem 4g in use + 1g requested > 4608m`},
		"slots ok":       {Policy{Name: "p", TotalSlots: map[string]string{"cpu": "5", "mem": "5g"}}, ""},
		"unlisted slot":  {Policy{Name: "p", TotalSlots: map[string]string{"cuda.device": "1"}}, ""},
		"slot zero left": {Policy{Name: "p", TotalSlots: map[string]string{"cpu": "4"}}, "cpu 4 in use + 1 requested > 4"},
	} {
		err := q.check(ctx, "AKIAAAAAAAAAAAAAAAAA", &c.policy, spec, &keyState{})
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%s: %v", name, err)
		case c.want != "" && (!errors.Is(err, events.ErrQuota) || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%s: %v, want %q", name, err, c.want)
		}
	}
	if asked.SessionID != "new" {
		t.Fatalf("usage asked for %+v", asked)
	}
	// A retried create of a session already known passes: the log answers
	// it as a duplicate.
	if err := q.check(ctx, "AKIAAAAAAAAAAAAAAAAA", &Policy{Name: "p", MaxConcurrentSessions: 1}, &events.SessionSpec{ID: "r1"}, &keyState{}); err != nil {
		t.Fatalf("retry: %v", err)
	}
	// While the lease is held without a break, the gateway's own enqueues
	// that the registry has not applied yet count too, and the registry
	// need only have applied what the last check saw.
	applied = 7
	ks := &keyState{synced: true, syncSeq: 5, ledger: []admitted{{seq: 6, slots: slots.Set{"cpu": slots.Scale}}, {seq: 9, slots: slots.Set{"cpu": slots.Scale}}}}
	err = q.check(ctx, "AKIAAAAAAAAAAAAAAAAA", &Policy{Name: "p", MaxPendingSessions: 3}, spec, ks)
	if !errors.Is(err, events.ErrQuota) || asked.MinSeq != 5 || len(ks.ledger) != 1 || ks.syncSeq != 7 {
		t.Fatalf("with a ledger: %v, asked %+v, ledger %v, synced to %d", err, asked, ks.ledger, ks.syncSeq)
	}
	err = q.check(ctx, "AKIAAAAAAAAAAAAAAAAA", &Policy{Name: "p", TotalSlots: map[string]string{"cpu": "5"}}, spec, ks)
	if !errors.Is(err, events.ErrQuota) || !strings.Contains(err.Error(), "cpu 5 in use + 1 requested > 5") {
		t.Fatalf("slots with a ledger: %v", err)
	}
	applied = 9
	if err := q.check(ctx, "AKIAAAAAAAAAAAAAAAAA", &Policy{Name: "p", MaxPendingSessions: 3}, spec, ks); err != nil || len(ks.ledger) != 0 {
		t.Fatalf("ledger applied: %v %v", err, ks.ledger)
	}
	// Without a registry, nothing is admitted.
	_ = sub.Unsubscribe()
	err = q.check(ctx, "AKIAAAAAAAAAAAAAAAAA", &Policy{Name: "p", MaxConcurrentSessions: 10}, spec, &keyState{})
	if !errors.Is(err, events.ErrBusy) {
		t.Fatalf("no registry: %v", err)
	}
}

// TestAdmissionLeaseAcrossGateways: two gateways (each its own quotas and
// connection) serialize the admissions of one key through the lease: never
// two holders at once; a lease left by a dead gateway is taken over once
// expired; a live one makes a create wait, then answer busy.
func TestAdmissionLeaseAcrossGateways(t *testing.T) {
	srv := natstest.RunServer(t)
	ctx := context.Background()
	var qs [2]*quotas
	for i := range qs {
		nc := natstest.Connect(t, srv)
		js, _ := jetstream.New(nc)
		q, err := newQuotas(ctx, nc, js, 0)
		if err != nil {
			t.Fatal(err)
		}
		qs[i] = q
	}
	const ak = "AKIATESTLEASE0000000"
	var inside, most, done atomic.Int32
	var wg sync.WaitGroup
	for i := range 40 {
		wg.Go(func() {
			release, err := qs[i%2].serialize(ctx, ak)
			if err != nil {
				t.Error(err)
				return
			}
			n := inside.Add(1)
			for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
			}
			time.Sleep(time.Millisecond) // hold it, as an admission does
			inside.Add(-1)
			done.Add(1)
			release()
		})
	}
	wg.Wait()
	if most.Load() != 1 || done.Load() != 40 {
		t.Fatalf("%d admissions done, at most %d at once (want 40, 1)", done.Load(), most.Load())
	}

	// A dead gateway's expired lease is taken over.
	stale, _ := json.Marshal(lease{Holder: "dead", Until: time.Now().Add(-time.Second)})
	if _, err := qs[0].leases.Put(ctx, "ak."+ak, stale); err != nil {
		t.Fatal(err)
	}
	release, err := qs[1].serialize(ctx, ak)
	if err != nil {
		t.Fatalf("take over an expired lease: %v", err)
	}
	// While held, the other gateway waits, then answers busy.
	wctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	if _, err := qs[0].serialize(wctx, ak); !errors.Is(err, events.ErrBusy) || !strings.Contains(err.Error(), "retry") {
		t.Fatalf("lease held elsewhere: %v", err)
	}
	release()
	// Given back, it is free at once.
	release, err = qs[0].serialize(ctx, ak)
	if err != nil {
		t.Fatal(err)
	}
	release()
	if _, err := qs[0].leases.Get(ctx, "ak."+ak); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Fatalf("lease after release: %v", err)
	}
}
