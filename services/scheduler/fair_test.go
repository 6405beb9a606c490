package scheduler

import (
	"fmt"
	"testing"
	"time"

	"github.com/bai-sh/bai/pkg/events"
)

// rounds is a Service that is not run and has no connection: the test
// feeds its state and runs its placement rounds by hand (place), so it
// counts rounds exactly; it counts the pending-info events the rounds
// plan.
type rounds struct {
	t     *testing.T
	s     *Service
	seq   uint64
	infos int
}

func newRounds(t *testing.T, gp GroupPolicy) *rounds {
	t.Helper()
	s, err := newService(Config{Default: gp})
	if err != nil {
		t.Fatal(err)
	}
	return &rounds{t: t, s: s}
}

func (r *rounds) agent(id string, capacity map[string]string) {
	r.t.Helper()
	info := &events.AgentInfo{V: events.Version, ID: id, Epoch: 1, ScalingGroup: "default", Capacity: capacity}
	if err := r.s.st.heartbeat(info, time.Now()); err != nil {
		r.t.Fatal(err)
	}
}

func (r *rounds) enqueue(ak, sid string, slotMap map[string]string) {
	r.seq++
	sp := &events.SessionSpec{ID: sid, AccessKey: ak, Image: "python:3.11", Slots: slotMap,
		ScalingGroup: "default", MainKernelID: "k-" + sid, Type: events.TypeInteractive}
	r.s.st.apply(&events.Event{V: events.Version, ID: "e-" + sid, Name: events.EventEnqueued, Time: time.Now().UTC(),
		AccessKey: ak, SessionID: sid, Session: sp}, r.seq)
}

// round runs one placement round and returns the sessions it placed.
func (r *rounds) round() map[string]bool {
	r.t.Helper()
	r.s.mu.Lock()
	defer r.s.mu.Unlock()
	now := time.Now()
	r.s.infoBudget = r.s.st.infoTokens(now)
	placed := map[string]bool{}
	p := newPlan()
	for _, t := range r.s.place(p, now) {
		placed[t.sess.spec.ID] = true
	}
	r.infos += len(p.infos)
	return placed
}

func (r *rounds) sess(ak, sid string) *session { return r.s.st.sessions[key(ak, sid)] }

// Issue 13, point 6: 1,015 pending sessions of key A that fit nowhere do
// not delay key B's sessions that fit: under DRF (the default) B's go in
// the first round, under FIFO in the second (held back once behind the
// head); no round after says anything new about A's.
func TestBacklogThatFitsNowhereDelaysNoOne(t *testing.T) {
	for _, tc := range []struct {
		policy Policy
		rounds int // the round in which B's sessions are placed
	}{
		{"", 1}, // the default: DRF
		{FIFO, 2},
		{LIFO, 1},
	} {
		t.Run(string(tc.policy), func(t *testing.T) {
			r := newRounds(t, GroupPolicy{Policy: tc.policy})
			if tc.policy == "" && r.s.cfg.Default.Policy != DRF {
				t.Fatalf("default policy %s", r.s.cfg.Default.Policy)
			}
			for _, id := range []string{"agent-1", "agent-2", "agent-3"} {
				r.agent(id, map[string]string{"cpu": "2", "mem": "8g"})
			}
			for i := range 1015 {
				r.enqueue("AKA", fmt.Sprintf("a%d", i), map[string]string{"cpu": "4", "mem": "1g"})
			}
			if placed := r.round(); len(placed) != 0 {
				t.Fatalf("placed %v", placed)
			}
			r.enqueue("AKB", "b1", map[string]string{"cpu": "1", "mem": "1g"})
			r.enqueue("AKB", "b2", map[string]string{"cpu": "2", "mem": "1g"})
			for n := 1; ; n++ {
				placed := r.round()
				if len(placed) > 0 {
					if n != tc.rounds || len(placed) != 2 || !placed["b1"] || !placed["b2"] {
						t.Fatalf("round %d placed %v (want b1 and b2 in round %d)", n, placed, tc.rounds)
					}
					break
				}
				if n >= tc.rounds {
					t.Fatalf("nothing placed in %d rounds; b1 says %s %q", n, r.sess("AKB", "b1").infoReason, r.sess("AKB", "b1").infoMsg)
				}
				if sess := r.sess("AKB", "b1"); tc.policy == FIFO && !sess.waited {
					t.Fatal("b1 not placed and not held back")
				}
			}
			// Why A's wait: what is short, on which agents (the first
			// thousand in the policy's order are told at once, the rest
			// as the rate allows: LIFO tells the newest first).
			head := "a0"
			if tc.policy == LIFO {
				head = "a1014"
			}
			for _, sid := range []string{head} {
				sess := r.sess("AKA", sid)
				if sess.infoReason != events.ReasonNoAgent || sess.infoMsg != "cpu short on all 3 agents (largest free cpu=2)" {
					t.Fatalf("%s says %s %q", sid, sess.infoReason, sess.infoMsg)
				}
			}
		})
	}
}

// A session's wait reason is published when it changes, not at every
// round, and not when only its figures move.
func TestPendingInfoOnlyWhenTheReasonChanges(t *testing.T) {
	r := newRounds(t, GroupPolicy{})
	r.agent("agent-1", map[string]string{"cpu": "2", "mem": "8g"})
	for i := range 50 {
		r.enqueue("AKA", fmt.Sprintf("a%d", i), map[string]string{"cpu": "4"})
	}
	count := func() int { return r.infos }
	r.round()
	if n := count(); n != 50 {
		t.Fatalf("%d pending-info events after the first round, want 50", n)
	}
	r.round()
	r.round()
	if n := count(); n != 50 {
		t.Fatalf("%d pending-info events after three rounds, want 50", n)
	}
	// Other figures, the same reason: nothing new.
	r.agent("agent-1", map[string]string{"cpu": "3", "mem": "8g"})
	r.round()
	if n, msg := count(), r.sess("AKA", "a0").infoMsg; n != 50 || msg != "cpu short on the one agent (free cpu=2)" {
		t.Fatalf("%d events, a0 says %q", n, msg)
	}
	// Another reason: each says so once.
	r.agent("agent-2", map[string]string{"cpu": "3", "mem": "8g"})
	r.round()
	r.round()
	if n, msg := count(), r.sess("AKA", "a0").infoMsg; n != 100 || msg != "cpu short on all 2 agents (largest free cpu=3)" {
		t.Fatalf("%d events, a0 says %q", n, msg)
	}
}

func TestInfoKey(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		same bool
	}{
		{"cpu short on all 3 agents (largest free cpu=1)", "cpu short on all 4 agents (largest free cpu=0.5)", true},
		{"cpu short on all 3 agents (largest free cpu=1)", "cpu short on 2 of 3 agents (largest free cpu=1)", false},
		{"cpu short on all 3 agents (largest free cpu=1)", "mem short on all 3 agents (largest free mem=1g)", false},
		{"1 of 2 sessions running", "2 of 2 sessions running", true},
		{"s1,s2", "s1", false},
	} {
		if got := infoKey(events.ReasonNoAgent, tc.a) == infoKey(events.ReasonNoAgent, tc.b); got != tc.same {
			t.Errorf("%q vs %q: same %v, want %v", tc.a, tc.b, got, tc.same)
		}
	}
	if infoKey(events.ReasonNoAgent, "x") == infoKey(events.ReasonQueueBlocked, "x") {
		t.Error("reasons not told apart")
	}
}
