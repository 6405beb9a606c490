package scheduler

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/bai-sh/bai/pkg/events"
)

// Every non-final status has a deadline: a session stuck in PREPARING goes
// to ERROR (status-timeout), is ordered terminated and ends; an agent that
// ignores terminating orders is ordered again, then the session is forced
// to TERMINATED and its capacity released.
func TestStatusDeadlines(t *testing.T) {
	m := newSim(t, Config{Deadlines: map[events.Status]time.Duration{
		events.StatusPreparing:   200 * time.Millisecond,
		events.StatusError:       50 * time.Millisecond,
		events.StatusTerminating: 200 * time.Millisecond,
	}})
	m.agent("agent-a", map[string]string{"cpu": "1", "mem": "4g"}, func(a *simWorker) { a.stallAt = events.EventPreparing })
	m.enqueue("AKA", "stuck", cpu1, nil)
	m.wantStatus(events.StatusPreparing, "stuck")
	m.tick(150 * time.Millisecond)
	m.wantStatus(events.StatusPreparing, "stuck")
	m.until(100*time.Millisecond, 10, func() error {
		if st := m.status("stuck"); st != events.StatusTerminated {
			return fmt.Errorf("stuck is %s", st)
		}
		return nil
	})
	if r := m.obs.session("stuck").reason; r != events.ReasonStatusTimeout {
		t.Fatalf("reason %q", r)
	}

	deaf := m.agent("agent-b", map[string]string{"cpu": "1", "mem": "4g"}, func(a *simWorker) { a.ignoreTerminate, a.group = true, "other" })
	m.enqueue("AKA", "deaf", cpu1, func(sp *events.SessionSpec) { sp.ScalingGroup = "other" })
	m.wantStatus(events.StatusRunning, "deaf")
	m.publish(&events.Event{Name: events.EventTerminateRequest, AccessKey: "AKA", SessionID: "deaf"})
	m.settle()
	m.wantStatus(events.StatusTerminating, "deaf")
	m.until(100*time.Millisecond, 20, func() error {
		if st := m.status("deaf"); st != events.StatusTerminated {
			return fmt.Errorf("deaf is %s", st)
		}
		return nil
	})
	if got := m.s.Snapshot().Placed["agent-b"]; !got.IsZero() {
		t.Fatalf("ledger %s", got)
	}
	// The orders: the user's, two repeats, then the kill order.
	n := 0
	for _, ev := range m.obs.events {
		if ev.SessionID == "deaf" && ev.Name == events.EventTerminating {
			n++
		}
	}
	if n != 3 {
		t.Fatalf("%d terminating orders, want 3", n)
	}
	if len(deaf.running) != 0 {
		t.Fatalf("the kill order was not delivered: %v running", deaf.running)
	}
}

// A silent agent's sessions end (agent-lost) with a kill order, planned
// as one guarded chain per session: ERROR, then TERMINATED, then the
// unguarded kill.
func TestLostAgentPlan(t *testing.T) {
	m := newSim(t, Config{AgentTimeout: time.Second})
	a := m.agent("agent-a", map[string]string{"cpu": "2", "mem": "4g"}, nil)
	m.enqueue("AKA", "s1", cpu1, nil)
	m.wantStatus(events.StatusRunning, "s1")
	a.silent = true
	m.tick(900 * time.Millisecond)
	m.wantStatus(events.StatusRunning, "s1")
	m.tick(200 * time.Millisecond)
	m.wantStatus(events.StatusTerminated, "s1")
	if r := m.obs.session("s1").reason; r != events.ReasonAgentLost {
		t.Fatalf("reason %q", r)
	}
	var d *decision
	for _, p := range m.rec.plans {
		for _, dd := range p.decisions {
			if dd.sess.spec.ID == "s1" && dd.kill != nil {
				d = dd
			}
		}
	}
	if d == nil {
		t.Fatal("no decision with a kill order recorded")
	}
	if len(d.evs) != 2 || d.evs[0].Name != events.EventError || d.evs[1].Name != events.EventTerminated ||
		len(d.seqs) != 2 || d.seqs[1] != d.seqs[0]+1 || !d.killStored || d.kill.Name != events.EventCancelled {
		t.Fatalf("decision %+v", d)
	}
}

// A decision refused by the log (the session moved meanwhile) changes
// nothing in the state; the decision is planned again on the newer view.
func TestRefusedDecisionIsPlannedAgain(t *testing.T) {
	m := newSim(t, Config{})
	m.enqueue("AKA", "s1", cpu1, nil)
	// A newer event the scheduler has not seen: its cancel is refused.
	m.publish(&events.Event{Name: events.EventPendingInfo, AccessKey: "AKA", SessionID: "s1", Reason: events.ReasonNoAgent})
	m.s.mu.Lock()
	m.s.st.setTerminate(m.s.st.sessions[key("AKA", "s1")], events.ReasonUserRequested)
	m.s.mu.Unlock()
	m.s.decide(context.Background(), false)
	p := m.rec.plans[len(m.rec.plans)-1]
	if len(p.decisions) != 1 || len(p.decisions[0].seqs) != 0 {
		t.Fatalf("the stale cancel was stored: %+v", p.decisions)
	}
	if st := m.s.st.sessions[key("AKA", "s1")]; st == nil || st.status != events.StatusPending || st.terminateReason == "" {
		t.Fatal("a refused decision moved the state")
	}
	m.settle()
	m.wantStatus(events.StatusCancelled, "s1")
}

// blockingSubmitter holds every submission until released.
type blockingSubmitter struct {
	next    submitter
	entered chan struct{}
	release chan struct{}
}

func (b *blockingSubmitter) submit(ctx context.Context, p *plan) {
	b.entered <- struct{}{}
	<-b.release
	b.next.submit(ctx, p)
}

// Snapshot and the agents' view answer while a plan waits for the log:
// the decision loop holds no lock across the submission.
func TestSnapshotAnswersWhileAPlanIsSubmitted(t *testing.T) {
	m := newSim(t, Config{})
	m.agent("agent-a", map[string]string{"cpu": "2", "mem": "4g"}, nil)
	m.publish(&events.Event{Name: events.EventEnqueued, AccessKey: "AKA", SessionID: "s1", KernelID: "k-s1",
		Session: &events.SessionSpec{ID: "s1", AccessKey: "AKA", Image: "python:3.11", Slots: cpu1,
			ScalingGroup: "default", MainKernelID: "k-s1", Type: events.TypeInteractive}})
	m.deliver()
	b := &blockingSubmitter{next: m.rec, entered: make(chan struct{}), release: make(chan struct{})}
	m.s.sub = b
	done := make(chan struct{})
	go func() {
		defer close(done)
		m.s.decide(context.Background(), false)
	}()
	<-b.entered
	if snap := m.s.Snapshot(); snap.Pending != 1 {
		t.Fatalf("snapshot during the submission: %+v", snap)
	}
	if v := m.s.agentsView(m.now); !v.Agents["agent-a"].Live {
		t.Fatalf("agents' view during the submission: %+v", v)
	}
	close(b.release)
	<-done
	if snap := m.s.Snapshot(); snap.Pending != 0 || snap.Committed != 1 {
		t.Fatalf("snapshot after: %+v", snap)
	}
}
