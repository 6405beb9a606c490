package scheduler

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/bai-sh/bai/internal/natstest"
	"github.com/bai-sh/bai/pkg/events"
	"github.com/bai-sh/bai/pkg/events/streams"
)

const ak = "AKIATEST000000000001"

type fixture struct {
	t   *testing.T
	nc  *nats.Conn
	js  jetstream.JetStream
	svc *Service

	mu     sync.Mutex
	events []*events.Event // everything on the log, in order
}

func start(t *testing.T) *fixture {
	t.Helper()
	ns := natstest.RunServer(t)
	nc := natstest.Connect(t, ns)
	js, _ := jetstream.New(nc)
	ctx := context.Background()
	if err := streams.Provision(ctx, js, streams.Options{}); err != nil {
		t.Fatal(err)
	}
	f := &fixture{t: t, nc: nc, js: js}
	f.watch(func(ev *events.Event, _ uint64) {
		f.mu.Lock()
		f.events = append(f.events, ev)
		f.mu.Unlock()
	})
	svc, err := New(Config{NC: natstest.Connect(t, ns), Tick: 20 * time.Millisecond, Log: zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.InfoLevel)})
	if err != nil {
		t.Fatal(err)
	}
	f.svc = svc
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- svc.Run(runCtx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	select {
	case <-svc.Ready():
	case <-time.After(10 * time.Second):
		t.Fatal("scheduler not ready")
	}
	return f
}

// watch calls fn with every event of the log, in log order, from the
// start, until the test ends. Only what the stream accepted is seen.
func (f *fixture) watch(fn func(*events.Event, uint64)) {
	t := f.t
	cons, err := f.js.OrderedConsumer(context.Background(), streams.Sessions, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{events.AllSessionsFilter},
	})
	if err != nil {
		t.Fatal(err)
	}
	cc, err := cons.Consume(func(m jetstream.Msg) {
		ev, err := events.Decode(m.Subject(), m.Data())
		if err != nil {
			t.Errorf("bad event on the log: %v", err)
			return
		}
		md, _ := m.Metadata()
		fn(ev, md.Sequence.Stream)
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cc.Stop)
}

// heartbeat stands in for an agent: it writes its heartbeat to the KV.
func (f *fixture) heartbeat(id string, capacity map[string]string) {
	kv, err := f.js.KeyValue(context.Background(), streams.Agents)
	if err != nil {
		f.t.Fatal(err)
	}
	data, _ := json.Marshal(events.AgentInfo{V: 1, ID: id, Epoch: 1, ScalingGroup: "default", Capacity: capacity, Heartbeat: time.Now()})
	if _, err := kv.Put(context.Background(), id, data); err != nil {
		f.t.Fatal(err)
	}
}

func (f *fixture) publish(ev *events.Event) {
	f.t.Helper()
	ev.V, ev.Time = events.Version, time.Now().UTC()
	if ev.ID == "" {
		ev.ID = fmt.Sprintf("%s-%s", ev.Name, ev.SessionID)
	}
	subj, err := events.EventSubject(ev)
	if err != nil {
		f.t.Fatal(err)
	}
	data, _ := json.Marshal(ev)
	if _, err := f.js.Publish(context.Background(), subj, data, jetstream.WithMsgID(ev.ID)); err != nil {
		f.t.Fatal(err)
	}
}

func (f *fixture) enqueue(sid string, slots map[string]string) {
	f.publish(&events.Event{Name: events.EventEnqueued, AccessKey: ak, SessionID: sid, Session: &events.SessionSpec{
		ID: sid, AccessKey: ak, Image: "python:3.11-debian12", Slots: slots, ScalingGroup: "default", MainKernelID: "k-" + sid,
	}})
}

// named returns the events with this name, by session id.
func (f *fixture) named(name events.Name) map[string]*events.Event {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := map[string]*events.Event{}
	for _, ev := range f.events {
		if ev.Name == name {
			if _, dup := out[ev.SessionID]; dup {
				f.t.Errorf("%s twice for %s", name, ev.SessionID)
			}
			out[ev.SessionID] = ev
		}
	}
	return out
}

func (f *fixture) waitCount(name events.Name, n int) map[string]*events.Event {
	f.t.Helper()
	var got map[string]*events.Event
	natstest.CheckFor(f.t, 10*time.Second, 5*time.Millisecond, func() error {
		if got = f.named(name); len(got) != n {
			return fmt.Errorf("%d %s, want %d", len(got), name, n)
		}
		return nil
	})
	return got
}

func TestPlacesWithinCapacityFirstComeFirstServed(t *testing.T) {
	f := start(t)
	for i := range 5 {
		f.enqueue(fmt.Sprintf("s%d", i), map[string]string{"cpu": "1", "mem": "1g"})
	}
	f.heartbeat("agent-1", map[string]string{"cpu": "2", "mem": "8g"})
	placed := f.waitCount(events.EventScheduled, 2)
	for _, sid := range []string{"s0", "s1"} {
		ev := placed[sid]
		if ev == nil || ev.AgentID != "agent-1" || ev.AgentEpoch != 1 || ev.Session == nil || ev.Session.ID != sid {
			t.Fatalf("placement of %s: %+v", sid, ev)
		}
	}
	snap := f.svc.Snapshot()
	if snap.Pending != 3 || snap.Placed["agent-1"].String() != "cpu=2,mem=2g" {
		t.Fatalf("snapshot %+v", snap)
	}
	// Capacity frees: the next in line is placed, no other.
	for _, n := range []events.Name{events.EventPreparing, events.EventPrepared, events.EventCreating, events.EventStarted, events.EventTerminated} {
		f.publish(&events.Event{Name: n, AccessKey: ak, SessionID: "s0", AgentID: "agent-1"})
	}
	placed = f.waitCount(events.EventScheduled, 3)
	if placed["s2"] == nil {
		t.Fatalf("s2 not placed next: %v", placed)
	}
	// A duplicate of an old event changes nothing.
	f.publish(&events.Event{ID: "again", Name: events.EventEnqueued, AccessKey: ak, SessionID: "s0", Session: &events.SessionSpec{ID: "s0", AccessKey: ak, Slots: map[string]string{"cpu": "1"}, ScalingGroup: "default"}})
	natstest.CheckFor(t, 5*time.Second, 5*time.Millisecond, func() error {
		if got := f.svc.Snapshot().Placed["agent-1"].String(); got != "cpu=2,mem=2g" {
			return fmt.Errorf("ledger %s", got)
		}
		return nil
	})
	if n := len(f.named(events.EventScheduled)); n != 3 {
		t.Fatalf("%d placements after a duplicate", n)
	}
}

func TestPicksAgentWithMostFreeCapacity(t *testing.T) {
	f := start(t)
	f.heartbeat("small", map[string]string{"cpu": "2", "mem": "2g"})
	f.heartbeat("big", map[string]string{"cpu": "16", "mem": "64g"})
	natstest.CheckFor(t, 5*time.Second, 5*time.Millisecond, func() error {
		if len(f.svc.Snapshot().Placed) != 2 {
			return fmt.Errorf("agents not seen yet")
		}
		return nil
	})
	f.enqueue("a", map[string]string{"cpu": "1", "mem": "1g"})
	f.enqueue("huge", map[string]string{"cpu": "64"})
	placed := f.waitCount(events.EventScheduled, 1)
	if placed["a"].AgentID != "big" {
		t.Fatalf("placed on %s", placed["a"].AgentID)
	}
	natstest.CheckFor(t, 5*time.Second, 5*time.Millisecond, func() error {
		if snap := f.svc.Snapshot(); snap.Pending != 1 {
			return fmt.Errorf("a session that fits nowhere is not pending: %+v", snap)
		}
		return nil
	})
}

func TestTerminateRequests(t *testing.T) {
	f := start(t)
	f.enqueue("pending", map[string]string{"cpu": "1"})
	f.publish(&events.Event{Name: events.EventTerminateRequest, AccessKey: ak, SessionID: "pending", Reason: events.ReasonUserRequested})
	cancelled := f.waitCount(events.EventCancelled, 1)
	if ev := cancelled["pending"]; ev.AgentID != "" || ev.Reason != events.ReasonUserRequested {
		t.Fatalf("cancel %+v", ev)
	}

	f.heartbeat("agent-1", map[string]string{"cpu": "2"})
	f.enqueue("live", map[string]string{"cpu": "1"})
	f.waitCount(events.EventScheduled, 1)
	for _, n := range []events.Name{events.EventPreparing, events.EventPrepared, events.EventCreating, events.EventStarted} {
		f.publish(&events.Event{Name: n, AccessKey: ak, SessionID: "live", AgentID: "agent-1"})
	}
	f.publish(&events.Event{Name: events.EventTerminateRequest, AccessKey: ak, SessionID: "live", Reason: events.ReasonUserRequested})
	term := f.waitCount(events.EventTerminating, 1)
	if ev := term["live"]; ev.AgentID != "agent-1" {
		t.Fatalf("terminating %+v", ev)
	}
	// A second request while terminating is absorbed.
	f.publish(&events.Event{ID: "again", Name: events.EventTerminateRequest, AccessKey: ak, SessionID: "live"})
	f.publish(&events.Event{Name: events.EventTerminated, AccessKey: ak, SessionID: "live", AgentID: "agent-1"})
	natstest.CheckFor(t, 5*time.Second, 5*time.Millisecond, func() error {
		if got := f.svc.Snapshot().Placed["agent-1"]; !got.IsZero() {
			return fmt.Errorf("ledger %s after terminate", got)
		}
		return nil
	})
	if n := len(f.named(events.EventTerminating)); n != 1 {
		t.Fatalf("%d terminating events", n)
	}
}

func TestRestartRebuildsLedgerFromLog(t *testing.T) {
	ns := natstest.RunServer(t)
	nc := natstest.Connect(t, ns)
	js, _ := jetstream.New(nc)
	f := &fixture{t: t, nc: nc, js: js}
	if err := streams.Provision(context.Background(), js, streams.Options{}); err != nil {
		t.Fatal(err)
	}
	f.heartbeat("agent-1", map[string]string{"cpu": "1"})
	f.enqueue("a", map[string]string{"cpu": "1"})
	f.enqueue("b", map[string]string{"cpu": "1"})
	run := func() (*Service, func()) {
		svc, err := New(Config{NC: natstest.Connect(t, ns), Tick: 20 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- svc.Run(ctx) }()
		<-svc.Ready()
		return svc, func() { cancel(); <-done }
	}
	svc, stop := run()
	natstest.CheckFor(t, 5*time.Second, 5*time.Millisecond, func() error {
		if got := svc.Snapshot().Placed["agent-1"].String(); got != "cpu=1" {
			return fmt.Errorf("ledger %q", got)
		}
		return nil
	})
	stop()
	svc, stop = run()
	defer stop()
	natstest.CheckFor(t, 5*time.Second, 5*time.Millisecond, func() error {
		snap := svc.Snapshot()
		if got := snap.Placed["agent-1"].String(); got != "cpu=1" || snap.Pending != 1 {
			return fmt.Errorf("after restart: ledger %q pending %d", got, snap.Pending)
		}
		return nil
	})
}
