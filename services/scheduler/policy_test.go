package scheduler

import (
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/bai-sh/bai/pkg/events"
)

// The policy tests run the planner without NATS (sim_test.go): what they
// check is what the planner decides, on a log that behaves as the real
// one; the real log's part is the invariant harness's (faults_test.go).

func prio(n int) func(*events.SessionSpec) {
	return func(sp *events.SessionSpec) { sp.Priority = &n }
}

// FIFO: a head that fits nowhere blocks the queue for SkipAfter rounds,
// then is passed over; the others wait with queue-blocked meanwhile.
func TestFIFOSkipsAHeadThatDoesNotFitAfterRetries(t *testing.T) {
	m := newSim(t, Config{Default: GroupPolicy{Policy: FIFO, SkipAfter: 5}})
	m.enqueue("AKA", "big", map[string]string{"cpu": "4"}, nil)
	m.enqueue("AKA", "small", cpu1, nil)
	m.tick(time.Second)
	if err := errors.Join(m.hasInfo("small", events.ReasonQueueBlocked), m.hasInfo("big", events.ReasonNoAgent)); err != nil {
		t.Fatal(err)
	}
	m.agent("agent-a", map[string]string{"cpu": "2", "mem": "4g"}, nil)
	m.until(time.Second, 10, func() error {
		if st := m.status("small"); st != events.StatusRunning {
			return fmt.Errorf("small is %s", st)
		}
		return nil
	})
	m.wantStatus(events.StatusPending, "big")
}

// Priority orders before the policy; LIFO places the newest first.
func TestPriorityThenLIFO(t *testing.T) {
	m := newSim(t, Config{Default: GroupPolicy{Policy: LIFO}})
	m.enqueue("AKA", "old", cpu1, nil)
	m.enqueue("AKA", "new", cpu1, nil)
	m.enqueue("AKA", "low", cpu1, prio(0))
	m.enqueue("AKA", "high", cpu1, prio(90))
	if err := m.hasInfo("low", events.ReasonNoAgent); err != nil {
		t.Fatal(err)
	}
	m.agent("agent-a", map[string]string{"cpu": "1", "mem": "4g"}, nil)
	for _, sid := range []string{"high", "new", "old", "low"} {
		m.wantStatus(events.StatusRunning, sid)
		m.finish("AKA", sid)
	}
	if got := m.placedOrder(); !slices.Equal(got, []string{"high", "new", "old", "low"}) {
		t.Fatalf("placed in order %v", got)
	}
}

// Priority orders before FIFO too.
func TestPriorityThenFIFO(t *testing.T) {
	m := newSim(t, Config{Default: GroupPolicy{Policy: FIFO}})
	m.enqueue("AKA", "first", cpu1, nil)
	m.enqueue("AKA", "second", cpu1, nil)
	m.enqueue("AKA", "urgent", cpu1, prio(100))
	if err := m.hasInfo("second", events.ReasonQueueBlocked); err != nil {
		t.Fatal(err)
	}
	m.agent("agent-a", map[string]string{"cpu": "1", "mem": "4g"}, nil)
	for _, sid := range []string{"urgent", "first", "second"} {
		m.wantStatus(events.StatusRunning, sid)
		m.finish("AKA", sid)
	}
	if got := m.placedOrder(); !slices.Equal(got, []string{"urgent", "first", "second"}) {
		t.Fatalf("placed in order %v", got)
	}
}

func TestAgentSelectors(t *testing.T) {
	m := newSim(t, Config{Groups: map[string]GroupPolicy{
		"conc": {Selector: Concentrated},
		"rr":   {Selector: RoundRobin},
	}})
	m.agent("big", map[string]string{"cpu": "8", "mem": "64g"}, func(a *simWorker) { a.group = "conc" })
	m.agent("small", map[string]string{"cpu": "2", "mem": "4g"}, func(a *simWorker) { a.group = "conc" })
	for _, id := range []string{"r1", "r2", "r3"} {
		m.agent(id, map[string]string{"cpu": "8", "mem": "64g"}, func(a *simWorker) { a.group = "rr" })
	}
	inGroup := func(g string) func(*events.SessionSpec) {
		return func(sp *events.SessionSpec) { sp.ScalingGroup = g }
	}
	m.enqueue("AKA", "c1", cpu1, inGroup("conc"))
	m.wantStatus(events.StatusRunning, "c1")
	if got := m.obs.session("c1").agent; got != "small" {
		t.Fatalf("concentrated placed on %s", got)
	}
	var got []string
	for _, sid := range []string{"q1", "q2", "q3", "q4"} {
		m.enqueue("AKA", sid, cpu1, inGroup("rr"))
		m.wantStatus(events.StatusRunning, sid)
		got = append(got, m.obs.session(sid).agent)
	}
	if !slices.Equal(got, []string{"r1", "r2", "r3", "r1"}) {
		t.Fatalf("round-robin placed on %v", got)
	}
	// A session of a group without agents waits.
	m.enqueue("AKA", "nowhere", cpu1, inGroup("empty"))
	if err := m.hasInfo("nowhere", events.ReasonNoAgent); err != nil {
		t.Fatal(err)
	}
}

// 10,000 pending sessions of one key and 10 of another: under DRF the
// other key's are placed as soon as capacity frees, not after the 10,000.
func TestDRFPlacesTheSmallUserPromptly(t *testing.T) {
	m := newSim(t, Config{Default: GroupPolicy{Policy: DRF}})
	// The agent first: 10,000 sessions that first wait for any agent,
	// then for cpu, would each say so twice.
	a := m.agent("agent-a", map[string]string{"cpu": "4", "mem": "64g"}, nil)
	// done ends every session running on the agent, as finished tasks.
	done := func() {
		for sid := range a.running {
			delete(a.running, sid)
			ak := "AKHEAVY"
			if sid[0] == 'l' {
				ak = "AKLIGHT"
			}
			m.publish(&events.Event{Name: events.EventTerminated, AccessKey: ak, SessionID: sid, KernelID: "k-" + sid,
				AgentID: a.id, AgentEpoch: 1, Reason: events.ReasonTaskFinished})
		}
		m.settle()
	}
	for _, sid := range sids("h", 10000) {
		m.publish(&events.Event{Name: events.EventEnqueued, AccessKey: "AKHEAVY", SessionID: sid, KernelID: "k-" + sid,
			Session: &events.SessionSpec{ID: sid, AccessKey: "AKHEAVY", Image: "python:3.11", Slots: cpu1,
				ScalingGroup: "default", MainKernelID: "k-" + sid, CreatedAt: m.now, Type: events.TypeInteractive}})
	}
	m.settle()
	for m.obs.count()[events.StatusTerminated] < 20 {
		done()
	}
	for _, sid := range sids("l", 10) {
		m.enqueue("AKLIGHT", sid, cpu1, nil)
	}
	light := sids("l", 10)
	m.until(0, 100, func() error {
		for _, sid := range light {
			if st := m.status(sid); st == events.StatusPending || st == events.StatusNone {
				done()
				return fmt.Errorf("%s still %s", sid, st)
			}
		}
		return nil
	})
	// Promptly: while they were placed, the heavy key got no more than
	// its share (about as many as the light one, plus the running ones).
	order := m.placedOrder()
	first, last := -1, -1
	for i, sid := range order {
		if sid[0] == 'l' {
			if first < 0 {
				first = i
			}
			last = i
		}
	}
	if heavy := last - first + 1 - 10; heavy > 20 {
		t.Fatalf("%d heavy placements between the first and last light one", heavy)
	}
	if p := m.s.Snapshot().Pending; p < 9000 {
		t.Fatalf("only %d pending: the heavy queue went first", p)
	}
}

// Predicates: --starts-at, --depends, the keypair's concurrency limit and
// the image minimum keep a session pending and say why; a failed
// dependency cancels; the pending timeout cancels.
func TestPredicatesAndPendingTimeout(t *testing.T) {
	m := newSim(t, Config{Groups: map[string]GroupPolicy{"short": {PendingTimeout: 300 * time.Millisecond}}})
	m.agent("agent-a", map[string]string{"cpu": "8", "mem": "64g"}, nil)

	at := m.now.Add(500 * time.Millisecond)
	m.enqueue("AKA", "later", cpu1, func(sp *events.SessionSpec) { sp.StartsAt = &at })
	m.enqueue("AKA", "dep", cpu1, nil)
	m.enqueue("AKA", "after", cpu1, func(sp *events.SessionSpec) { sp.Depends = []string{"dep"} })
	m.enqueue("AKA", "small", map[string]string{"cpu": "1"}, func(sp *events.SessionSpec) { sp.MinSlots = map[string]string{"cpu": "2"} })
	m.enqueue("AKB", "b1", cpu1, func(sp *events.SessionSpec) { sp.ConcurrencyLimit = 1 })
	m.enqueue("AKB", "b2", cpu1, func(sp *events.SessionSpec) { sp.ConcurrencyLimit = 1 })
	if err := errors.Join(m.hasInfo("later", events.ReasonStartsAt), m.hasInfo("after", events.ReasonDependsPending),
		m.hasInfo("small", events.ReasonImageMinimum), m.hasInfo("b2", events.ReasonConcurrencyLimit)); err != nil {
		t.Fatal(err)
	}
	m.wantStatus(events.StatusRunning, "dep", "b1")
	m.wantStatus(events.StatusPending, "later")
	m.tick(600 * time.Millisecond)
	m.wantStatus(events.StatusRunning, "later")
	m.wantStatus(events.StatusPending, "after")
	m.finish("AKA", "dep")
	m.wantStatus(events.StatusRunning, "after")
	m.finish("AKB", "b1")
	m.wantStatus(events.StatusRunning, "b2")

	// A dependency that did not succeed cancels the dependant.
	m.enqueue("AKA", "doomed", map[string]string{"cpu": "100"}, nil)
	m.enqueue("AKA", "child", cpu1, func(sp *events.SessionSpec) { sp.Depends = []string{"doomed"} })
	m.publish(&events.Event{Name: events.EventTerminateRequest, AccessKey: "AKA", SessionID: "doomed"})
	m.settle()
	m.wantStatus(events.StatusCancelled, "doomed", "child")
	if r := m.obs.session("child").reason; r != events.ReasonDependencyFailed {
		t.Fatalf("child cancelled with %q", r)
	}

	m.enqueue("AKA", "orphan", cpu1, func(sp *events.SessionSpec) { sp.Depends = []string{"nosuch"} })
	m.wantStatus(events.StatusCancelled, "orphan")

	m.enqueue("AKA", "forever", map[string]string{"cpu": "100"}, func(sp *events.SessionSpec) { sp.ScalingGroup = "short" })
	m.tick(200 * time.Millisecond)
	m.wantStatus(events.StatusPending, "forever")
	m.tick(200 * time.Millisecond)
	m.wantStatus(events.StatusCancelled, "forever")
	if r := m.obs.session("forever").reason; r != events.ReasonPendingTimeout {
		t.Fatalf("cancelled with %q", r)
	}
}

func TestBadConfig(t *testing.T) {
	for _, cfg := range []Config{
		{Default: GroupPolicy{Policy: "random"}},
		{Default: GroupPolicy{Selector: "nearest"}},
		{Groups: map[string]GroupPolicy{"g": {SkipAfter: -1}}},
		{Deadlines: map[events.Status]time.Duration{events.StatusRunning: time.Second}},
		{Deadlines: map[events.Status]time.Duration{events.StatusCreating: 0}},
		{LeaseTTL: time.Millisecond},
		{AgentTimeout: -time.Second},
	} {
		if _, err := newService(cfg); !errors.Is(err, ErrConfig) {
			t.Errorf("config %+v: %v", cfg, err)
		}
	}
	if _, err := New(Config{}); !errors.Is(err, ErrConfig) {
		t.Errorf("no connection: %v", err)
	}
	if _, err := newService(Config{}); err != nil {
		t.Errorf("the defaults: %v", err)
	}
}

// A batch session still running past its batch timeout is terminated.
func TestBatchTimeout(t *testing.T) {
	m := newSim(t, Config{})
	m.agent("agent-a", map[string]string{"cpu": "8", "mem": "64g"}, nil)
	m.enqueue("AKA", "job", cpu1, func(sp *events.SessionSpec) {
		sp.Type, sp.StartupCommand, sp.BatchTimeout = events.TypeBatch, "sleep 1000", 200*time.Millisecond
	})
	m.enqueue("AKA", "shell", cpu1, nil)
	m.tick(100 * time.Millisecond)
	m.wantStatus(events.StatusRunning, "job", "shell")
	m.tick(150 * time.Millisecond)
	m.wantStatus(events.StatusTerminated, "job")
	if r := m.obs.session("job").reason; r != events.ReasonBatchTimeout {
		t.Fatalf("reason %q", r)
	}
	m.wantStatus(events.StatusRunning, "shell")
}
