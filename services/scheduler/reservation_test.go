package scheduler

import (
	"fmt"
	"math"
	"slices"
	"testing"
	"time"

	"github.com/bai-sh/bai/internal/natstest"
	"github.com/bai-sh/bai/pkg/events"
	"github.com/bai-sh/bai/pkg/slots"
)

// reserve publishes an entry on agent's ledger reserving the session
// (ak, sid) as placed conditioned on seq: what a scheduler publishes
// before its placements, here without them (another scheduler's, or one
// that crashed between the two).
func (c *cluster) reserve(agent, ak, sid string, slotMap map[string]string, seq uint64) {
	c.t.Helper()
	c.publish(&events.Event{Name: events.EventAgentLedger, AccessKey: events.LedgerOwner, SessionID: agent, AgentID: agent,
		Reservations: []events.Reservation{{AccessKey: ak, SessionID: sid, Slots: slotMap, Seq: seq}}})
}

// waitReserved waits until s counts want (nil: nothing) reserved on agent.
func waitReserved(t testing.TB, s *sched, agent string, want map[string]string) {
	t.Helper()
	w := slots.Set{}
	if want != nil {
		var err error
		if w, err = slots.ParseMap(want); err != nil {
			t.Fatal(err)
		}
	}
	natstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if got := c0(s.svc.Snapshot().Reserved[agent]); !got.Equal(w) {
			return fmt.Errorf("reserved on %s: %s, want %s", agent, got, w)
		}
		return nil
	})
}

// waitInfo waits until the session was told it waits for reason.
func (c *cluster) waitInfo(sid string, reason events.Reason) {
	c.t.Helper()
	natstest.CheckFor(c.t, 10*time.Second, 10*time.Millisecond, func() error {
		if o := c.obs.session(sid); !slices.Contains(o.info, reason) {
			return fmt.Errorf("%s is %s, told %v, want %s", sid, o.status, o.info, reason)
		}
		return nil
	})
}

// A reservation of a still pending session counts against its agent: a
// session that only fits there without it waits. It stops counting once
// the reserved session is placed elsewhere.
func TestReservationCountsUntilPlacedElsewhere(t *testing.T) {
	c := newCluster(t)
	s := c.scheduler(Config{})
	c.agent("agent-a", map[string]string{"cpu": "2", "mem": "4g"}, nil)
	c.agent("agent-b", map[string]string{"cpu": "1", "mem": "4g"}, func(a *simAgent) { a.group = "other" })
	other := func(sp *events.SessionSpec) { sp.ScalingGroup = "other" }
	c.enqueue("AKA", "gate", cpu1, other)
	c.waitStatus(10*time.Second, events.StatusRunning, "gate")
	c.enqueue("AKA", "held", cpu1, func(sp *events.SessionSpec) { other(sp); sp.Depends = []string{"gate"} })
	c.waitInfo("held", events.ReasonDependsPending)
	// Reserved on agent-a by another scheduler: live while held is pending.
	c.reserve("agent-a", "AKA", "held", cpu1, math.MaxUint64)
	waitReserved(t, s, "agent-a", cpu1)
	c.enqueue("AKA", "big", map[string]string{"cpu": "2", "mem": "1g"}, nil)
	c.waitInfo("big", events.ReasonNoAgent)
	if st := c.obs.session("big").status; st != events.StatusPending {
		t.Fatalf("big is %s with agent-a's capacity reserved", st)
	}
	// gate ends: held goes to agent-b, its reservation on agent-a is void,
	// and big takes agent-a.
	c.publish(&events.Event{Name: events.EventTerminateRequest, AccessKey: "AKA", SessionID: "gate"})
	c.waitStatus(10*time.Second, events.StatusRunning, "held", "big")
	if a, b := c.obs.session("held").agent, c.obs.session("big").agent; a != "agent-b" || b != "agent-a" {
		t.Fatalf("held on %s, big on %s", a, b)
	}
	waitReserved(t, s, "agent-a", nil)
}

// A scheduler that crashed between its ledger entry and its placement
// leaves a reservation with no placement. It counts while its session
// waits, and leaks nothing: it is void once the session ends, and a
// session reserved on an agent it fills alone is still placed there (its
// own reservation becomes its placement).
func TestReservationWithoutPlacementLeaksNothing(t *testing.T) {
	c := newCluster(t)
	s := c.scheduler(Config{})
	c.agent("agent-a", map[string]string{"cpu": "1", "mem": "4g"}, nil)

	// Ends: s1 waits for a start an hour away, reserved on agent-a as a
	// scheduler would have before placing it (at its last sequence).
	later := time.Now().Add(time.Hour)
	c.enqueue("AKA", "s1", cpu1, func(sp *events.SessionSpec) { sp.StartsAt = &later })
	c.waitInfo("s1", events.ReasonStartsAt)
	c.reserve("agent-a", "AKA", "s1", cpu1, c.obs.session("s1").lastSeq)
	waitReserved(t, s, "agent-a", cpu1)
	c.enqueue("AKA", "s2", cpu1, nil)
	c.waitInfo("s2", events.ReasonNoAgent)
	c.publish(&events.Event{Name: events.EventTerminateRequest, AccessKey: "AKA", SessionID: "s1"})
	c.waitStatus(10*time.Second, events.StatusCancelled, "s1")
	c.waitStatus(10*time.Second, events.StatusRunning, "s2")
	waitReserved(t, s, "agent-a", nil)
	c.publish(&events.Event{Name: events.EventTerminateRequest, AccessKey: "AKA", SessionID: "s2"})
	c.waitStatus(10*time.Second, events.StatusTerminated, "s2")

	// Places: s3 waits for room (told so), reserved on agent-a, the only
	// agent, which the reservation fills once gate ends. Nothing new is
	// said of s3 (its reason to wait is unchanged), so only counting its
	// own reservation as the placement's lets it go.
	c.enqueue("AKA", "gate", cpu1, nil)
	c.waitStatus(10*time.Second, events.StatusRunning, "gate")
	c.enqueue("AKA", "s3", cpu1, nil)
	c.waitInfo("s3", events.ReasonNoAgent)
	c.reserve("agent-a", "AKA", "s3", cpu1, c.obs.session("s3").lastSeq)
	waitReserved(t, s, "agent-a", cpu1)
	c.publish(&events.Event{Name: events.EventTerminateRequest, AccessKey: "AKA", SessionID: "gate"})
	c.waitStatus(10*time.Second, events.StatusRunning, "s3")
	if a := c.obs.session("s3").agent; a != "agent-a" {
		t.Fatalf("s3 on %s", a)
	}
	waitReserved(t, s, "agent-a", nil)
	natstest.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		return sameLedger(ledger(s.svc.Snapshot()), c.liveKernels())
	})
}

// Reservations in the state: one per session and agent however often it
// is reserved, void once the session moves past the reserved sequence.
func TestReservationAccounting(t *testing.T) {
	st := newState()
	if err := st.heartbeat(&events.AgentInfo{V: events.Version, ID: "a", ScalingGroup: "g", Capacity: map[string]string{"cpu": "4"}}, time.Now()); err != nil {
		t.Fatal(err)
	}
	sp := &events.SessionSpec{ID: "s", AccessKey: "AK", ScalingGroup: "g", Slots: map[string]string{"cpu": "1"}}
	st.apply(&events.Event{V: events.Version, ID: "e1", Name: events.EventEnqueued, AccessKey: "AK", SessionID: "s", Session: sp}, 1)
	ledger := func(id string, seq uint64) {
		st.apply(&events.Event{V: events.Version, ID: id, Name: events.EventAgentLedger, AccessKey: events.LedgerOwner, SessionID: "a", AgentID: "a",
			Reservations: []events.Reservation{{AccessKey: "AK", SessionID: "s", Slots: sp.Slots, Seq: seq}}}, 0)
	}
	resv := reservations{}
	ledger("l1", 1)
	ledger("l2", 1)
	resv.add("a", "AK.s", 1, 1)
	if got, want := st.agents["a"].used, st.sessions["AK.s"].slots; !got.Equal(want) {
		t.Fatalf("reserved twice: used %s, want %s", got, want)
	}
	if err := checkIndexes(st, resv); err != nil {
		t.Fatal(err)
	}
	st.apply(&events.Event{V: events.Version, ID: "e2", Name: events.EventPendingInfo, AccessKey: "AK", SessionID: "s"}, 2)
	if got := st.agents["a"].used; !got.IsZero() {
		t.Fatalf("after the session moved: used %s", got)
	}
	if len(st.sessions["AK.s"].resv) != 0 || len(st.agents["a"].resv) != 0 {
		t.Fatal("void reservation kept")
	}
	ledger("l0", 1) // stale on arrival: void
	if got := st.agents["a"].used; !got.IsZero() {
		t.Fatalf("a stale reservation counts: used %s", got)
	}
	if err := checkIndexes(st, resv); err != nil {
		t.Fatal(err)
	}
}
