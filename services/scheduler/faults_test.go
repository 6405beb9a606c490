package scheduler

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/bai-sh/bai/internal/natstest"
	"github.com/bai-sh/bai/pkg/events"
	"github.com/bai-sh/bai/pkg/events/streams"
)

var cpu1 = map[string]string{"cpu": "1", "mem": "1g"}

// Two schedulers deciding at once (a split brain: both believe they lead)
// never place a session twice nor over-commit an agent.
func TestTwoSchedulersNoDoublePlacementNoOverCommit(t *testing.T) {
	c := newCluster(t)
	for i := range 3 {
		c.agent(fmt.Sprintf("agent-%d", i), map[string]string{"cpu": "2", "mem": "4g"}, func(a *simAgent) { a.runFor = 30 * time.Millisecond })
	}
	c.scheduler(Config{forceLead: true})
	c.scheduler(Config{forceLead: true})
	ids := sids("s", 60)
	for _, sid := range ids {
		c.enqueue("AKA", sid, cpu1, nil)
	}
	c.waitCounts(60*time.Second, map[events.Status]int{events.StatusTerminated: 60})
}

// The leader's lease: one instance leads; when it crashes (no release), a
// standby takes over within LeaseTTL + LeaseTTL/3 (plus the KV's expiry
// granularity) and places what was left, each session once.
func TestLeaseFailover(t *testing.T) {
	c := newCluster(t)
	c.agent("agent-1", map[string]string{"cpu": "1", "mem": "4g"}, nil)
	ttl := time.Second
	a := c.scheduler(Config{LeaseTTL: ttl, InstanceID: "a"})
	natstest.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		if !a.svc.Leader() {
			return fmt.Errorf("a does not lead")
		}
		return nil
	})
	b := c.scheduler(Config{LeaseTTL: ttl, InstanceID: "b"})
	c.enqueue("AKA", "first", cpu1, nil)
	c.waitStatus(10*time.Second, events.StatusRunning, "first")
	if b.svc.Leader() {
		t.Fatal("two leaders with a live lease")
	}
	a.crash()
	start := time.Now()
	natstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if !b.svc.Leader() {
			return fmt.Errorf("b does not lead")
		}
		return nil
	})
	took := time.Since(start)
	t.Logf("takeover after %s (lease TTL %s)", took, ttl)
	// The bound is TTL+TTL/3 plus the server's expiry timer; the slack is
	// for a loaded test machine.
	if bound := ttl + ttl/3; took > bound+2*time.Second {
		t.Errorf("takeover took %s, bound is about %s", took, bound)
	}
	c.enqueue("AKA", "second", cpu1, nil)
	c.publish(&events.Event{Name: events.EventTerminateRequest, AccessKey: "AKA", SessionID: "first", Reason: events.ReasonUserRequested})
	c.waitStatus(10*time.Second, events.StatusRunning, "second")
	c.waitStatus(10*time.Second, events.StatusTerminated, "first")
	// A clean stop releases the lease at once.
	cc := c.scheduler(Config{LeaseTTL: time.Minute, InstanceID: "c"})
	b.stop()
	natstest.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		if !cc.svc.Leader() {
			return fmt.Errorf("c does not lead")
		}
		return nil
	})
}

// A renewal the server applied but whose answer was lost leaves the lease
// at a revision its leader does not know: the next renewal is refused for
// its revision, the leader finds the key still its own and leads on (it
// used to step down and leave the cluster without placements until the
// lease expired). A lease written by another instance makes it step down,
// and it leads again once that lease expires.
func TestLeaseSurvivesALostRenewalAnswer(t *testing.T) {
	c := newCluster(t)
	c.agent("agent-1", map[string]string{"cpu": "1", "mem": "4g"}, nil)
	ttl := 900 * time.Millisecond
	a := c.scheduler(Config{LeaseTTL: ttl, InstanceID: "a"})
	leads := func(want bool) func() error {
		return func() error {
			if a.svc.Leader() != want {
				return fmt.Errorf("a leads: %v, want %v", !want, want)
			}
			return nil
		}
	}
	natstest.CheckFor(t, 5*time.Second, 10*time.Millisecond, leads(true))
	ctx := context.Background()
	kv, err := c.js.KeyValue(ctx, streams.Leases)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, leaseKey, []byte("a")); err != nil {
		t.Fatal(err)
	}
	// Three renewals later it has never stopped leading, and places.
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for end := time.Now().Add(ttl + ttl/3); time.Now().Before(end); <-tick.C {
		if !a.svc.Leader() {
			t.Fatal("the leader stepped down for a renewal of its own")
		}
	}
	c.enqueue("AKA", "placed", cpu1, nil)
	c.waitStatus(10*time.Second, events.StatusRunning, "placed")

	if _, err := kv.Put(ctx, leaseKey, []byte("intruder")); err != nil {
		t.Fatal(err)
	}
	natstest.CheckFor(t, 5*time.Second, 5*time.Millisecond, leads(false))
	natstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, leads(true))
}

// An agents' watch that stopped delivering (as a consumer under load may,
// for seconds) is not an agent lost: before it declares one lost, the
// scheduler reads the agent's heartbeat from the bucket, and a newer one
// keeps its sessions running. An agent that really stopped beating is
// still declared lost while the watch is behind.
func TestAgentWatchBehindIsNotAgentLost(t *testing.T) {
	c := newCluster(t)
	timeout := 300 * time.Millisecond
	s := c.scheduler(Config{AgentTimeout: timeout})
	a := c.agent("agent-a", map[string]string{"cpu": "2", "mem": "4g"}, nil)
	c.enqueue("AKA", "run", cpu1, nil)
	c.waitStatus(10*time.Second, events.StatusRunning, "run")
	s.svc.agentWatchPaused.Store(true)
	defer s.svc.agentWatchPaused.Store(false)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for end := time.Now().Add(5 * timeout); time.Now().Before(end); <-tick.C {
		if st := c.obs.session("run").status; st != events.StatusRunning {
			t.Fatalf("a beating agent's session went %s while the watch was behind", st)
		}
	}
	a.stop()
	c.waitStatus(10*time.Second, events.StatusTerminated, "run")
	if r := c.obs.session("run").reason; r != events.ReasonAgentLost {
		t.Fatalf("ended with reason %q", r)
	}
}

// An agent killed with one session RUNNING and one CREATING: both go to
// ERROR then TERMINATED with reason agent-lost, the capacity is released
// and the next session goes to another agent. Healed (the same agent and
// epoch back on the network), it finds the kill orders and drops the
// kernels it still had: never two kernels for a session.
func TestAgentLostAndHealed(t *testing.T) {
	c := newCluster(t)
	s := c.scheduler(Config{AgentTimeout: 300 * time.Millisecond, Default: GroupPolicy{Selector: Concentrated}})
	lost := c.agent("agent-a", map[string]string{"cpu": "2", "mem": "4g"}, nil)
	c.enqueue("AKA", "run", cpu1, nil)
	c.waitStatus(10*time.Second, events.StatusRunning, "run")
	lost.setStall(events.EventCreating)
	c.enqueue("AKA", "creating", cpu1, nil)
	c.waitStatus(10*time.Second, events.StatusCreating, "creating")
	lost.stop()
	c.waitStatus(10*time.Second, events.StatusTerminated, "run", "creating")
	for _, sid := range []string{"run", "creating"} {
		if r := c.obs.session(sid).reason; r != events.ReasonAgentLost {
			t.Errorf("%s ended with reason %q", sid, r)
		}
	}
	natstest.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		if got := s.svc.Snapshot().Placed["agent-a"]; !got.IsZero() {
			return fmt.Errorf("ledger of the lost agent: %s", got)
		}
		return nil
	})
	c.agent("agent-b", map[string]string{"cpu": "2", "mem": "4g"}, nil)
	c.enqueue("AKA", "next", cpu1, nil)
	c.waitStatus(10*time.Second, events.StatusRunning, "next")
	if got := c.obs.session("next").agent; got != "agent-b" {
		t.Fatalf("placed on %s", got)
	}
	if lost.runningCount() != 2 {
		t.Fatalf("the partitioned agent runs %d kernels", lost.runningCount())
	}
	// Heal: it comes back and drops what it ran for the lost sessions.
	lost.setStall("")
	lost.start()
	natstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if n := lost.runningCount(); n != 0 {
			return fmt.Errorf("healed agent still runs %d kernels", n)
		}
		return nil
	})
	natstest.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		return sameLedger(ledger(s.svc.Snapshot()), c.liveKernels())
	})
}

// 50 concurrent creates against room for 10: exactly 10 placed, 40
// pending, each placed as others finish; never over capacity (the observer
// checks every instant of the log).
func TestFiftyCreatesRoomForTen(t *testing.T) {
	c := newCluster(t)
	s := c.scheduler(Config{})
	a := c.agent("agent-a", map[string]string{"cpu": "6", "mem": "64g"}, nil)
	c.agent("agent-b", map[string]string{"cpu": "4", "mem": "64g"}, nil)
	ids := sids("s", 50)
	done := make(chan struct{})
	for _, sid := range ids {
		go func() {
			c.enqueue("AKA", sid, cpu1, nil)
			done <- struct{}{}
		}()
	}
	for range ids {
		<-done
	}
	c.waitCounts(10*time.Second, map[events.Status]int{events.StatusRunning: 10, events.StatusPending: 40})
	if snap := s.svc.Snapshot(); snap.Pending != 40 {
		t.Fatalf("snapshot %+v", snap)
	}
	// Finish them in waves: each freed slot takes the next one.
	for wave := 1; wave <= 4; wave++ {
		var running []string
		for _, sid := range ids {
			if c.obs.session(sid).status == events.StatusRunning {
				running = append(running, sid)
			}
		}
		for _, sid := range running {
			c.publish(&events.Event{Name: events.EventTerminateRequest, AccessKey: "AKA", SessionID: sid})
		}
		c.waitCounts(10*time.Second, map[events.Status]int{events.StatusRunning: 10, events.StatusPending: 40 - 10*wave, events.StatusTerminated: 10 * wave})
	}
	_ = a
}

// runScenario places 30 sessions on two agents, terminates them all and
// returns each session's final status and reason.
func runScenario(t *testing.T, chaos bool) map[string]string {
	c := newCluster(t)
	s := c.scheduler(Config{})
	for _, id := range []string{"agent-a", "agent-b"} {
		c.agent(id, map[string]string{"cpu": "4", "mem": "64g"}, func(a *simAgent) {
			if chaos {
				a.ackWait, a.skipAcks, a.dup = 50*time.Millisecond, 3, true
			}
		})
	}
	ids := sids("s", 30)
	for _, sid := range ids {
		c.enqueue("AKA", sid, cpu1, nil)
		if chaos && sid == "s0015" {
			// The scheduler too sees everything again: a restart replays
			// the whole log.
			s.stop()
			s = c.scheduler(Config{})
		}
	}
	for done := 0; done < 30; done += 8 {
		c.waitCounts(30*time.Second, map[events.Status]int{events.StatusRunning: min(8, 30-done), events.StatusPending: max(0, 22-done), events.StatusTerminated: done})
		var running []string
		for _, sid := range ids {
			if c.obs.session(sid).status == events.StatusRunning {
				running = append(running, sid)
			}
		}
		for _, sid := range running {
			c.publish(&events.Event{Name: events.EventTerminateRequest, AccessKey: "AKA", SessionID: sid})
			if chaos {
				c.publish(&events.Event{Name: events.EventTerminateRequest, AccessKey: "AKA", SessionID: sid})
			}
		}
	}
	c.waitCounts(30*time.Second, map[events.Status]int{events.StatusTerminated: 30})
	natstest.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		return sameLedger(ledger(s.svc.Snapshot()), c.liveKernels())
	})
	out := map[string]string{}
	for _, sid := range ids {
		o := c.obs.session(sid)
		out[sid] = fmt.Sprintf("%s/%s/placed=%d", o.status, o.reason, o.placed)
	}
	return out
}

// Every work message redelivered several times (an ack wait of 50ms, each
// message left unacknowledged three times), every agent event published
// twice, terminate requests repeated, and the scheduler restarted half
// way: the final state is the clean run's.
func TestRedeliveryGivesTheCleanFinalState(t *testing.T) {
	clean := runScenario(t, false)
	chaos := runScenario(t, true)
	for sid, want := range clean {
		if chaos[sid] != want {
			t.Errorf("%s: %s with redeliveries, %s clean", sid, chaos[sid], want)
		}
	}
}

// The leader crashed at random points (mid-round, between a placement and
// its application, ...) over a run of 300 sessions: every session ends,
// none is placed twice, no agent is over-committed at any instant, and the
// last leader's ledger equals the live kernels.
func TestLeaderKilledAtRandom(t *testing.T) {
	c := newCluster(t)
	for i := range 4 {
		c.agent(fmt.Sprintf("agent-%d", i), map[string]string{"cpu": "4", "mem": "64g"}, func(a *simAgent) { a.runFor = 10 * time.Millisecond })
	}
	cfg := Config{LeaseTTL: 400 * time.Millisecond}
	live := []*sched{c.scheduler(cfg), c.scheduler(cfg)}
	ids := sids("s", 300)
	go func() {
		for _, sid := range ids {
			if err := publishOn(c.js, &events.Event{Name: events.EventEnqueued, AccessKey: "AKA", SessionID: sid, Session: &events.SessionSpec{
				ID: sid, AccessKey: "AKA", Slots: cpu1, ScalingGroup: "default", MainKernelID: "k-" + sid}}); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	rng := rand.New(rand.NewPCG(1, 2))
	kills := 0
	for kills < 8 && c.obs.count()[events.StatusTerminated] < len(ids) {
		time.Sleep(time.Duration(50+rng.IntN(250)) * time.Millisecond) // a random point in the run
		for i, s := range live {
			if s.svc.Leader() {
				s.crash()
				kills++
				live = append(live[:i:i], live[i+1:]...)
				live = append(live, c.scheduler(cfg))
				break
			}
		}
	}
	t.Logf("%d leaders killed", kills)
	c.waitCounts(60*time.Second, map[events.Status]int{events.StatusTerminated: len(ids)})
	natstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		for _, s := range live {
			if s.svc.Leader() {
				return sameLedger(ledger(s.svc.Snapshot()), c.liveKernels())
			}
		}
		return fmt.Errorf("no leader")
	})
}
