package scheduler

import (
	"fmt"
	"testing"
	"time"

	"github.com/bai-sh/bai/pkg/events"
	"github.com/bai-sh/bai/pkg/slots"
)

// benchState is a state with n live agents of 64 cpus and 256 GiB each,
// every one of them a little used.
func benchState(b *testing.B, n int, now time.Time) *state {
	st := newState()
	for i := range n {
		info := &events.AgentInfo{
			V: events.Version, ID: fmt.Sprintf("agent-%05d", i), Epoch: 1, Runtime: "sim", ScalingGroup: "default",
			Capacity: map[string]string{"cpu": "64", "mem": "274877906944"}, Heartbeat: now,
		}
		if err := st.heartbeat(info, now); err != nil {
			b.Fatal(err)
		}
		used, err := slots.ParseMap(map[string]string{"cpu": fmt.Sprint(i % 7), "mem": "1g"})
		if err != nil {
			b.Fatal(err)
		}
		st.setUsed(st.agents[info.ID], used)
	}
	return st
}

func benchSession(b *testing.B, i int) *session {
	req, err := slots.ParseMap(map[string]string{"cpu": "1", "mem": "256m"})
	if err != nil {
		b.Fatal(err)
	}
	return &session{
		spec: &events.SessionSpec{ID: fmt.Sprintf("s%d", i), AccessKey: "ak", ScalingGroup: "default",
			Slots: req.Map(), MainKernelID: fmt.Sprintf("k%d", i)},
		slots: req, status: events.StatusPending,
	}
}

// BenchmarkPick10000Agents is one placement decision over 10,000 agents.
func BenchmarkPick10000Agents(b *testing.B) {
	now := time.Now()
	st := benchState(b, 10_000, now)
	sess := benchSession(b, 0)
	b.ReportAllocs()
	r := st.newRound("default", GroupPolicy{}, now, time.Minute, map[string]int{})
	for b.Loop() {
		if r.pick(sess) == nil {
			b.Fatal("no agent picked")
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "placements/s")
}

// BenchmarkApplyLifecycle applies a session's events to the scheduler's
// state from enqueue to termination, as its log consumer does.
func BenchmarkApplyLifecycle(b *testing.B) {
	now := time.Now()
	st := benchState(b, 100, now)
	names := []events.Name{events.EventEnqueued, events.EventScheduled, events.EventPreparing,
		events.EventPrepared, events.EventCreating, events.EventKernelStarted, events.EventStarted,
		events.EventTerminating, events.EventTerminated}
	sess := benchSession(b, 0)
	b.ReportAllocs()
	var seq uint64
	i := 0
	for b.Loop() {
		sid := fmt.Sprintf("s%d", i)
		i++
		spec := *sess.spec
		spec.ID = sid
		for _, n := range names {
			seq++
			ev := &events.Event{V: events.Version, Name: n, AccessKey: "ak", SessionID: sid, Time: now}
			if n == events.EventEnqueued || n == events.EventScheduled {
				ev.Session = &spec
			}
			if n != events.EventEnqueued {
				// The placed agent's id on every event after the
				// placement: an end without it is refused as forged.
				ev.AgentID = "agent-00001"
			}
			st.apply(ev, seq)
		}
	}
	if len(st.sessions) != 0 || len(st.pending) != 0 {
		b.Fatalf("%d sessions, %d pending left", len(st.sessions), len(st.pending))
	}
}

// BenchmarkRound1000Agents10000Sessions is the leader's work after an
// input batch that leaves one session pending beside 10,000 sessions
// holding capacity on 1,000 agents: the terminate requests, then the
// placement plan, short of publishing it.
func BenchmarkRound1000Agents10000Sessions(b *testing.B) {
	now := time.Now()
	st := benchState(b, 1000, now)
	var seq uint64
	enqueue := func(i int) *session {
		sess := benchSession(b, i)
		seq++
		st.apply(&events.Event{V: events.Version, Name: events.EventEnqueued, AccessKey: "ak", SessionID: sess.spec.ID, Time: now, Session: sess.spec}, seq)
		return sess
	}
	for i := range 10_000 {
		sess := enqueue(i)
		seq++
		st.apply(&events.Event{V: events.Version, Name: events.EventScheduled, AccessKey: "ak", SessionID: sess.spec.ID, Time: now,
			Session: sess.spec, AgentID: fmt.Sprintf("agent-%05d", i%1000)}, seq)
	}
	enqueue(10_000)
	s := &Service{st: st, cfg: Config{AgentTimeout: time.Minute}}
	b.ReportAllocs()
	for b.Loop() {
		if len(s.toTerminate()) != 0 {
			b.Fatal("terminate requests")
		}
		if batch := s.place(newPlan(), now); len(batch) != 1 {
			b.Fatalf("%d placements", len(batch))
		}
	}
}
