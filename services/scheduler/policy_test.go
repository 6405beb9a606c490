package scheduler

import (
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/bai-sh/bai/internal/natstest"
	"github.com/bai-sh/bai/pkg/events"
)

func prio(n int) func(*events.SessionSpec) {
	return func(sp *events.SessionSpec) { sp.Priority = &n }
}

// placedOrder lists the sessions in the order they were placed.
func (c *cluster) placedOrder() []string {
	c.obs.mu.Lock()
	defer c.obs.mu.Unlock()
	var out []string
	for _, ev := range c.obs.events {
		if ev.Name == events.EventScheduled {
			out = append(out, ev.SessionID)
		}
	}
	return out
}

func (c *cluster) hasInfo(sid string, r events.Reason) error {
	if slices.Contains(c.obs.session(sid).info, r) {
		return nil
	}
	return fmt.Errorf("%s has no pending info %s: %v", sid, r, c.obs.session(sid).info)
}

func (c *cluster) finish(sid string) {
	c.publish(&events.Event{Name: events.EventTerminateRequest, AccessKey: "AKA", SessionID: sid})
	c.waitStatus(10*time.Second, events.StatusTerminated, sid)
}

// FIFO: a head that fits nowhere blocks the queue for SkipAfter rounds,
// then is passed over; the others wait with queue-blocked meanwhile.
func TestFIFOSkipsAHeadThatDoesNotFitAfterRetries(t *testing.T) {
	c := newCluster(t)
	c.scheduler(Config{Default: GroupPolicy{Policy: FIFO, SkipAfter: 5}})
	c.enqueue("AKA", "big", map[string]string{"cpu": "4"}, nil)
	c.enqueue("AKA", "small", cpu1, nil)
	natstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		return errors.Join(c.hasInfo("small", events.ReasonQueueBlocked), c.hasInfo("big", events.ReasonNoAgent))
	})
	c.agent("agent-a", map[string]string{"cpu": "2", "mem": "4g"}, nil)
	c.waitStatus(10*time.Second, events.StatusRunning, "small")
	if st := c.obs.session("big").status; st != events.StatusPending {
		t.Fatalf("big is %s", st)
	}
}

// Priority orders before the policy; LIFO places the newest first.
func TestPriorityThenLIFO(t *testing.T) {
	c := newCluster(t)
	c.scheduler(Config{Default: GroupPolicy{Policy: LIFO}})
	c.enqueue("AKA", "old", cpu1, nil)
	c.enqueue("AKA", "new", cpu1, nil)
	c.enqueue("AKA", "low", cpu1, prio(0))
	c.enqueue("AKA", "high", cpu1, prio(90))
	natstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		return c.hasInfo("low", events.ReasonNoAgent)
	})
	c.agent("agent-a", map[string]string{"cpu": "1", "mem": "4g"}, nil)
	for _, sid := range []string{"high", "new", "old", "low"} {
		c.waitStatus(10*time.Second, events.StatusRunning, sid)
		c.finish(sid)
	}
	if got := c.placedOrder(); !slices.Equal(got, []string{"high", "new", "old", "low"}) {
		t.Fatalf("placed in order %v", got)
	}
}

// Priority orders before FIFO too.
func TestPriorityThenFIFO(t *testing.T) {
	c := newCluster(t)
	c.scheduler(Config{Default: GroupPolicy{Policy: FIFO}})
	c.enqueue("AKA", "first", cpu1, nil)
	c.enqueue("AKA", "second", cpu1, nil)
	c.enqueue("AKA", "urgent", cpu1, prio(100))
	natstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		return c.hasInfo("second", events.ReasonQueueBlocked)
	})
	c.agent("agent-a", map[string]string{"cpu": "1", "mem": "4g"}, nil)
	for _, sid := range []string{"urgent", "first", "second"} {
		c.waitStatus(10*time.Second, events.StatusRunning, sid)
		c.finish(sid)
	}
	if got := c.placedOrder(); !slices.Equal(got, []string{"urgent", "first", "second"}) {
		t.Fatalf("placed in order %v", got)
	}
}

func TestAgentSelectors(t *testing.T) {
	c := newCluster(t)
	c.scheduler(Config{Groups: map[string]GroupPolicy{
		"conc": {Selector: Concentrated},
		"rr":   {Selector: RoundRobin},
	}})
	c.agent("big", map[string]string{"cpu": "8", "mem": "64g"}, func(a *simAgent) { a.group = "conc" })
	c.agent("small", map[string]string{"cpu": "2", "mem": "4g"}, func(a *simAgent) { a.group = "conc" })
	for _, id := range []string{"r1", "r2", "r3"} {
		c.agent(id, map[string]string{"cpu": "8", "mem": "64g"}, func(a *simAgent) { a.group = "rr" })
	}
	inGroup := func(g string) func(*events.SessionSpec) {
		return func(sp *events.SessionSpec) { sp.ScalingGroup = g }
	}
	c.enqueue("AKA", "c1", cpu1, inGroup("conc"))
	c.waitStatus(10*time.Second, events.StatusRunning, "c1")
	if got := c.obs.session("c1").agent; got != "small" {
		t.Fatalf("concentrated placed on %s", got)
	}
	var got []string
	for _, sid := range []string{"q1", "q2", "q3", "q4"} {
		c.enqueue("AKA", sid, cpu1, inGroup("rr"))
		c.waitStatus(10*time.Second, events.StatusRunning, sid)
		got = append(got, c.obs.session(sid).agent)
	}
	if !slices.Equal(got, []string{"r1", "r2", "r3", "r1"}) {
		t.Fatalf("round-robin placed on %v", got)
	}
	// A session of a group without agents waits.
	c.enqueue("AKA", "nowhere", cpu1, inGroup("empty"))
	natstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error { return c.hasInfo("nowhere", events.ReasonNoAgent) })
}

// 10,000 pending sessions of one key and 10 of another: under DRF the
// other key's are placed as soon as capacity frees, not after the 10,000.
func TestDRFPlacesTheSmallUserPromptly(t *testing.T) {
	if testing.Short() {
		t.Skip("10,000 sessions")
	}
	c := newCluster(t)
	s := c.scheduler(Config{Default: GroupPolicy{Policy: DRF}, Tick: 200 * time.Millisecond})
	// The agent first: 10,000 sessions that first wait for any agent,
	// then for cpu, would each say so twice (20,000 pending-info events).
	c.agent("agent-a", map[string]string{"cpu": "4", "mem": "64g"}, func(a *simAgent) { a.runFor = 20 * time.Millisecond })
	c.enqueueAsync("AKHEAVY", sids("h", 10000), cpu1)
	natstest.CheckFor(t, 30*time.Second, 10*time.Millisecond, func() error {
		if n := c.obs.count()[events.StatusTerminated]; n < 20 {
			return fmt.Errorf("%d heavy sessions done", n)
		}
		return nil
	})
	c.enqueueAsync("AKLIGHT", sids("l", 10), cpu1)
	light := sids("l", 10)
	natstest.CheckFor(t, 30*time.Second, 10*time.Millisecond, func() error {
		for _, sid := range light {
			if st := c.obs.session(sid).status; st == events.StatusPending || st == events.StatusNone {
				return fmt.Errorf("%s still %s", sid, st)
			}
		}
		return nil
	})
	// Promptly: while they were placed, the heavy key got no more than
	// its share (about as many as the light one, plus the running ones).
	order := c.placedOrder()
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
	if p := s.svc.Snapshot().Pending; p < 9000 {
		t.Fatalf("only %d pending: the heavy queue went first", p)
	}
}

// Predicates: --starts-at, --depends, the keypair's concurrency limit and
// the image minimum keep a session pending and say why; a failed
// dependency cancels; the pending timeout cancels.
func TestPredicatesAndPendingTimeout(t *testing.T) {
	c := newCluster(t)
	c.scheduler(Config{Groups: map[string]GroupPolicy{"short": {PendingTimeout: 300 * time.Millisecond}}})
	c.agent("agent-a", map[string]string{"cpu": "8", "mem": "64g"}, nil)

	at := time.Now().Add(500 * time.Millisecond)
	c.enqueue("AKA", "later", cpu1, func(sp *events.SessionSpec) { sp.StartsAt = &at })
	c.enqueue("AKA", "dep", cpu1, nil)
	c.enqueue("AKA", "after", cpu1, func(sp *events.SessionSpec) { sp.Depends = []string{"dep"} })
	c.enqueue("AKA", "small", map[string]string{"cpu": "1"}, func(sp *events.SessionSpec) { sp.MinSlots = map[string]string{"cpu": "2"} })
	c.enqueue("AKB", "b1", cpu1, func(sp *events.SessionSpec) { sp.ConcurrencyLimit = 1 })
	c.enqueue("AKB", "b2", cpu1, func(sp *events.SessionSpec) { sp.ConcurrencyLimit = 1 })
	natstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		return errors.Join(c.hasInfo("later", events.ReasonStartsAt), c.hasInfo("after", events.ReasonDependsPending),
			c.hasInfo("small", events.ReasonImageMinimum), c.hasInfo("b2", events.ReasonConcurrencyLimit))
	})
	c.waitStatus(10*time.Second, events.StatusRunning, "dep", "b1", "later")
	if st := c.obs.session("after").status; st != events.StatusPending {
		t.Fatalf("after is %s before its dependency ended", st)
	}
	c.finish("dep")
	c.waitStatus(10*time.Second, events.StatusRunning, "after")
	c.publish(&events.Event{Name: events.EventTerminateRequest, AccessKey: "AKB", SessionID: "b1"})
	c.waitStatus(10*time.Second, events.StatusRunning, "b2")

	// A dependency that did not succeed cancels the dependant.
	c.enqueue("AKA", "doomed", map[string]string{"cpu": "100"}, nil)
	c.enqueue("AKA", "child", cpu1, func(sp *events.SessionSpec) { sp.Depends = []string{"doomed"} })
	c.publish(&events.Event{Name: events.EventTerminateRequest, AccessKey: "AKA", SessionID: "doomed"})
	c.waitStatus(10*time.Second, events.StatusCancelled, "doomed", "child")
	if r := c.obs.session("child").reason; r != events.ReasonDependencyFailed {
		t.Fatalf("child cancelled with %q", r)
	}

	c.enqueue("AKA", "orphan", cpu1, func(sp *events.SessionSpec) { sp.Depends = []string{"nosuch"} })
	c.waitStatus(10*time.Second, events.StatusCancelled, "orphan")

	c.enqueue("AKA", "forever", map[string]string{"cpu": "100"}, func(sp *events.SessionSpec) { sp.ScalingGroup = "short" })
	c.waitStatus(10*time.Second, events.StatusCancelled, "forever")
	if r := c.obs.session("forever").reason; r != events.ReasonPendingTimeout {
		t.Fatalf("cancelled with %q", r)
	}
}

func TestBadConfig(t *testing.T) {
	c := newCluster(t)
	for _, cfg := range []Config{
		{NC: c.nc, Default: GroupPolicy{Policy: "random"}},
		{NC: c.nc, Default: GroupPolicy{Selector: "nearest"}},
		{NC: c.nc, Groups: map[string]GroupPolicy{"g": {SkipAfter: -1}}},
		{NC: c.nc, Deadlines: map[events.Status]time.Duration{events.StatusRunning: time.Second}},
		{NC: c.nc, Deadlines: map[events.Status]time.Duration{events.StatusCreating: 0}},
		{NC: c.nc, LeaseTTL: time.Millisecond},
		{NC: c.nc, AgentTimeout: -time.Second},
		{},
	} {
		if _, err := New(cfg); !errors.Is(err, ErrConfig) {
			t.Errorf("config %+v: %v", cfg, err)
		}
	}
}

// A batch session still running past its batch timeout is terminated.
func TestBatchTimeout(t *testing.T) {
	c := newCluster(t)
	c.scheduler(Config{})
	c.agent("agent-a", map[string]string{"cpu": "8", "mem": "64g"}, nil)
	c.enqueue("AKA", "job", cpu1, func(sp *events.SessionSpec) {
		sp.Type, sp.StartupCommand, sp.BatchTimeout = events.TypeBatch, "sleep 1000", 200*time.Millisecond
	})
	c.enqueue("AKA", "shell", cpu1, nil)
	c.waitStatus(10*time.Second, events.StatusTerminated, "job")
	if r := c.obs.session("job").reason; r != events.ReasonBatchTimeout {
		t.Fatalf("reason %q", r)
	}
	if st := c.obs.session("shell").status; st != events.StatusRunning {
		t.Fatalf("the interactive session is %s", st)
	}
}
