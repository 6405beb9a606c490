package scheduler

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/bai-sh/bai/pkg/events"
	"github.com/bai-sh/bai/pkg/slots"
)

// recorder is the planner tests' submitter: it records every plan and
// stores its events in an in-memory log as JetStream stores them on the
// session log (a message id once; a guarded event only when the last
// sequence of its session's subjects, or of its ledger subject, is the
// one expected), in the order the JetStream submitter publishes them.
type recorder struct {
	plans []*plan
	log   []*events.Event // log[i] is stored at sequence i+1
	last  map[string]uint64
	ids   map[string]uint64
}

func newRecorder() *recorder {
	return &recorder{last: map[string]uint64{}, ids: map[string]uint64{}}
}

// store appends ev unless its id is stored already (then it answers the
// stored sequence) or guarded and the subject's last sequence is not
// expect.
func (r *recorder) store(ev *events.Event, expect uint64, guarded bool) (uint64, bool) {
	if seq, dup := r.ids[ev.ID]; dup {
		return seq, true
	}
	k := key(ev.AccessKey, ev.SessionID) // a session's subjects, or an agent's ledger subject
	if guarded && r.last[k] != expect {
		return 0, false
	}
	r.log = append(r.log, ev)
	seq := uint64(len(r.log))
	r.ids[ev.ID], r.last[k] = seq, seq
	return seq, true
}

func (r *recorder) submit(_ context.Context, p *plan) {
	r.plans = append(r.plans, p)
	for _, list := range p.orders {
		for _, o := range list {
			if _, o.stored = r.store(o.ev, 0, false); !o.stored {
				break
			}
		}
	}
	for _, d := range p.decisions {
		expect := d.expect
		for _, ev := range d.evs {
			seq, ok := r.store(ev, expect, true)
			if !ok {
				break
			}
			d.seqs = append(d.seqs, seq)
			expect = seq
		}
		if d.kill != nil && len(d.seqs) == len(d.evs) {
			_, d.killStored = r.store(d.kill, 0, false)
		}
	}
	for _, in := range p.infos {
		_, in.sent = r.store(in.ev, 0, false)
	}
	for _, b := range p.batches {
		b.tried = true
		ok := true
		for _, le := range b.ledgers {
			seq, stored := r.store(le.ev, p.ledgerSeq[le.ev.AgentID], true)
			if !stored {
				ok = false
				continue
			}
			le.seq, le.stored = seq, true
			p.ledgerSeq[le.ev.AgentID] = seq
		}
		for _, le := range b.ledgers {
			if le.stored {
				for _, pl := range le.places {
					pl.seq, pl.stored = r.store(pl.ev, pl.expect, true)
				}
			}
		}
		if !ok {
			return
		}
	}
}

// sim runs one Service's decision loop by hand, without NATS: its
// submitter is a recorder, and each event of the recorder's log goes, in
// log order, to the observer (which checks the invariants at every
// instant), to the service (as its log consumer gives it) and to the
// simulated agents, which answer their work at once. Time is the sim's
// clock, moved by tick.
type sim struct {
	t      *testing.T
	s      *Service
	rec    *recorder
	obs    *observer
	now    time.Time
	next   int // the first log entry not delivered yet
	agents []*simWorker
}

// simWorker is a simulated agent: it takes every placement on it through
// to RUNNING, unless it stalls at stallAt, and terminates what it is
// ordered to, unless it ignores the orders.
type simWorker struct {
	id, group       string
	capacity        map[string]string
	stallAt         events.Name
	ignoreTerminate bool
	silent          bool // stopped: no heartbeat, no answers
	running         map[string]bool
}

func newSim(t *testing.T, cfg Config) *sim {
	t.Helper()
	s, err := newService(cfg)
	if err != nil {
		t.Fatal(err)
	}
	m := &sim{t: t, s: s, rec: newRecorder(), now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	m.obs = &observer{t: t, capacity: map[string]slots.Set{}, used: map[string]slots.Set{}, sessions: map[string]*obsSession{}, maxUsed: map[string]slots.Set{}}
	s.sub = m.rec
	s.st.now = func() time.Time { return m.now }
	s.leading.Store(true)
	close(s.ready)
	return m
}

// publish stores ev as a client (the gateway, an agent) would: unguarded.
func (m *sim) publish(ev *events.Event) {
	ev.V = events.Version
	if ev.ID == "" {
		ev.ID = events.NewID()
	}
	if ev.Time.IsZero() {
		ev.Time = m.now
	}
	m.rec.store(ev, 0, false)
}

func (m *sim) enqueue(ak, sid string, slotMap map[string]string, mod func(*events.SessionSpec)) {
	sp := &events.SessionSpec{ID: sid, AccessKey: ak, Image: "python:3.11", Slots: slotMap,
		ScalingGroup: "default", MainKernelID: "k-" + sid, CreatedAt: m.now, Type: events.TypeInteractive}
	if mod != nil {
		mod(sp)
	}
	m.publish(&events.Event{Name: events.EventEnqueued, AccessKey: ak, SessionID: sid, KernelID: sp.MainKernelID, Session: sp})
	m.settle()
}

func (m *sim) agent(id string, capacity map[string]string, mod func(*simWorker)) *simWorker {
	a := &simWorker{id: id, group: "default", capacity: capacity, running: map[string]bool{}}
	if mod != nil {
		mod(a)
	}
	m.obs.setCapacity(id, capacity)
	m.agents = append(m.agents, a)
	m.beat(a)
	m.settle()
	return a
}

func (m *sim) beat(a *simWorker) {
	info := &events.AgentInfo{V: events.Version, ID: a.id, Epoch: 1, ScalingGroup: a.group, Capacity: a.capacity, Heartbeat: m.now}
	m.s.mu.Lock()
	defer m.s.mu.Unlock()
	if err := m.s.st.heartbeat(info, m.now); err != nil {
		m.t.Fatal(err)
	}
	m.s.st.dirty = true
}

// deliver gives the log's new events to the observer, the service and
// the agents, in order.
func (m *sim) deliver() {
	for m.next < len(m.rec.log) {
		ev := m.rec.log[m.next]
		m.next++
		seq := uint64(m.next)
		m.obs.apply(ev, seq)
		m.s.mu.Lock()
		m.s.st.apply(ev, seq)
		m.s.mu.Unlock()
		for _, a := range m.agents {
			if ev.AgentID == a.id && !a.silent && events.AddressedToAgent(ev.Name, ev.AgentID) {
				a.handle(m, ev)
			}
		}
	}
}

func (a *simWorker) handle(m *sim, ev *events.Event) {
	pub := func(name events.Name, reason events.Reason) {
		m.publish(&events.Event{Name: name, AccessKey: ev.AccessKey, SessionID: ev.SessionID, KernelID: ev.KernelID,
			AgentID: a.id, AgentEpoch: 1, Reason: reason})
	}
	switch ev.Name {
	case events.EventScheduled:
		if a.running[ev.SessionID] {
			return
		}
		a.running[ev.SessionID] = true
		for _, n := range []events.Name{events.EventPreparing, events.EventPrepared, events.EventCreating, events.EventStarted} {
			pub(n, "")
			if n == a.stallAt {
				return
			}
		}
	case events.EventTerminating:
		if a.ignoreTerminate {
			return
		}
		delete(a.running, ev.SessionID)
		pub(events.EventTerminated, ev.Reason)
	case events.EventCancelled:
		delete(a.running, ev.SessionID)
	}
}

// settle runs the decision loop on what the log brings, as Run does
// after each batch of inputs, until nothing new comes.
func (m *sim) settle() {
	m.t.Helper()
	for range 10_000 {
		m.deliver()
		m.s.decide(context.Background(), false)
		if m.next == len(m.rec.log) && !m.s.st.dirty {
			return
		}
	}
	m.t.Fatal("the decision loop does not settle")
}

// tick moves the clock by d, beats the agents that are not silent and
// runs a timed decision step (Run's ticker), then settles.
func (m *sim) tick(d time.Duration) {
	m.t.Helper()
	m.now = m.now.Add(d)
	for _, a := range m.agents {
		if !a.silent {
			m.beat(a)
		}
	}
	m.deliver()
	m.s.decide(context.Background(), true)
	m.settle()
}

// until ticks by step until cond holds, at most n times.
func (m *sim) until(step time.Duration, n int, cond func() error) {
	m.t.Helper()
	var err error
	for range n {
		if err = cond(); err == nil {
			return
		}
		m.tick(step)
	}
	if err = cond(); err != nil {
		m.t.Fatalf("after %d ticks of %s: %v", n, step, err)
	}
}

// status is the status the observer folded for sid.
func (m *sim) status(sid string) events.Status { return m.obs.session(sid).status }

func (m *sim) wantStatus(st events.Status, sids ...string) {
	m.t.Helper()
	for _, sid := range sids {
		if got := m.status(sid); got != st {
			m.t.Fatalf("session %s is %s, want %s", sid, got, st)
		}
	}
}

func (m *sim) placedOrder() []string {
	var out []string
	for _, ev := range m.obs.events {
		if ev.Name == events.EventScheduled {
			out = append(out, ev.SessionID)
		}
	}
	return out
}

func (m *sim) hasInfo(sid string, r events.Reason) error {
	for _, got := range m.obs.session(sid).info {
		if got == r {
			return nil
		}
	}
	return fmt.Errorf("%s has no pending info %s: %v", sid, r, m.obs.session(sid).info)
}

func (m *sim) finish(ak, sid string) {
	m.t.Helper()
	m.publish(&events.Event{Name: events.EventTerminateRequest, AccessKey: ak, SessionID: sid})
	m.settle()
	m.wantStatus(events.StatusTerminated, sid)
}
