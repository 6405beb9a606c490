package scheduler

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"sort"
	"testing"
	"time"

	"github.com/bai-sh/bai/pkg/events"
	"github.com/bai-sh/bai/pkg/slots"
)

// refRound is the placement round as it was before the indexes: slot
// sets, every live agent of the group scanned for every pick, sorted by id.
type refRound struct {
	st     *state
	group  string
	gp     GroupPolicy
	agents []*agent
	failed []slots.Set
	extra  map[*agent]slots.Set
}

func newRefRound(st *state, group string, gp GroupPolicy, now time.Time, timeout time.Duration) *refRound {
	r := &refRound{st: st, group: group, gp: gp, extra: map[*agent]slots.Set{}}
	for _, a := range st.agents {
		if a.info.ScalingGroup == group && a.live(now, timeout) {
			r.agents = append(r.agents, a)
		}
	}
	sort.Slice(r.agents, func(i, j int) bool { return r.agents[i].info.ID < r.agents[j].info.ID })
	return r
}

func (r *refRound) pick(s *session) *agent {
	for _, f := range r.failed {
		if dominates(s.slots, f) {
			return nil
		}
	}
	var best *agent
	var bestScore int64
	start := 0
	if r.gp.Selector == RoundRobin {
		last := r.st.rr[r.group]
		start = sort.Search(len(r.agents), func(i int) bool { return r.agents[i].info.ID > last })
	}
	for i := range r.agents {
		a := r.agents[(start+i)%len(r.agents)]
		used := a.used
		if x := r.extra[a]; x != nil {
			used, _ = used.Add(x)
		}
		if !used.AddFits(s.slots, a.capacity) {
			continue
		}
		if r.gp.Selector == RoundRobin {
			return a
		}
		score := freeScoreWith(a.capacity, used, s.slots)
		if r.gp.Selector == Concentrated {
			score = -score
		}
		if best == nil || score > bestScore {
			best, bestScore = a, score
		}
	}
	if best == nil {
		r.failed = append(r.failed, s.slots)
	}
	return best
}

func (r *refRound) add(a *agent, s *session) {
	x := r.extra[a]
	if x == nil {
		x = slots.Set{}
	}
	if n, err := x.Add(s.slots); err == nil {
		r.extra[a] = n
	}
}

// randSet draws a slot set over a few keys, some of them absent or zero.
func randSet(rng *rand.Rand, scale int64) slots.Set {
	s := slots.Set{}
	for _, k := range []string{"cpu", "mem", "cuda.device", "cuda.shares"} {
		switch rng.IntN(4) {
		case 0:
		case 1:
			s[k] = 0
		default:
			s[k] = slots.Quantity(rng.Int64N(scale) + 1)
		}
	}
	return s
}

// TestPickMatchesReference: on random agents, loads and requests, a
// round picks exactly the agents the plain scan picks, with every
// selector, tentative placements included.
func TestPickMatchesReference(t *testing.T) {
	now := time.Now()
	for seed := range uint64(300) {
		rng := rand.New(rand.NewPCG(seed, 7))
		st := newState()
		st.now = func() time.Time { return now }
		n := 1 + rng.IntN(40)
		for i := range n {
			id := fmt.Sprintf("a%02d", rng.IntN(60))
			if i%5 == 4 {
				st.agent(id) // placed on, never heard from
				continue
			}
			group := []string{"g", "h"}[rng.IntN(2)]
			capacity := randSet(rng, 16)
			info := &events.AgentInfo{V: events.Version, ID: id, ScalingGroup: group, Capacity: capacity.Map()}
			seen := now.Add(-time.Duration(rng.IntN(3)) * 40 * time.Second)
			if err := st.heartbeat(info, seen); err != nil {
				t.Fatal(err)
			}
			a := st.agents[id]
			st.setUsed(a, randSet(rng, 12))
			if rng.IntN(10) == 0 {
				st.agentGone(id)
			}
		}
		for _, sel := range []Selector{Dispersed, Concentrated, RoundRobin} {
			gp := GroupPolicy{Selector: sel}
			st.rr["g"] = fmt.Sprintf("a%02d", rng.IntN(60))
			got := st.newRound("g", gp, now, time.Minute, map[string]int{})
			want := newRefRound(st, "g", gp, now, time.Minute)
			for i := range 30 {
				sess := &session{slots: randSet(rng, 6)}
				if rng.IntN(8) == 0 {
					sess.slots["cuda.other"] = 1 // a key no agent has
				}
				a, b := got.pick(sess), want.pick(sess)
				if a != b {
					t.Fatalf("seed %d %s pick %d of %v: got %v, want %v", seed, sel, i, sess.slots, name(a), name(b))
				}
				if a != nil {
					got.add(a, sess)
					want.add(b, sess)
					st.rr["g"] = a.info.ID
				}
			}
		}
	}
}

func name(a *agent) string {
	if a == nil {
		return "none"
	}
	return a.id
}

// TestIndexesFollowTheLog: after random event sequences (an agent's
// start folded into one event half the time), the indexes hold what a
// walk of the state finds.
func TestIndexesFollowTheLog(t *testing.T) {
	lifecycle := []events.Name{events.EventScheduled, events.EventPreparing, events.EventPrepared,
		events.EventCreating, events.EventStarted, events.EventTerminating, events.EventTerminated}
	for seed := range uint64(50) {
		rng := rand.New(rand.NewPCG(seed, 11))
		st := newState()
		now := time.Now()
		for i := range 6 {
			id := fmt.Sprintf("a%d", i)
			info := &events.AgentInfo{V: events.Version, ID: id, ScalingGroup: []string{"g", "h"}[i%2],
				Capacity: map[string]string{"cpu": "64", "mem": "256g"}}
			if err := st.heartbeat(info, now); err != nil {
				t.Fatal(err)
			}
		}
		var seq uint64
		next := map[string]int{} // session → index of its next lifecycle event
		var live []string
		resv := reservations{}
		for i := range 400 {
			seq++
			switch op := rng.IntN(12); {
			case op < 3 || len(live) == 0:
				sid := fmt.Sprintf("s%d", i)
				ak := []string{"AKA", "AKB", "AKC"}[rng.IntN(3)]
				sp := &events.SessionSpec{ID: sid, AccessKey: ak, ScalingGroup: []string{"g", "h"}[rng.IntN(2)],
					Slots: map[string]string{"cpu": fmt.Sprint(1 + rng.IntN(4)), "mem": "1g"}}
				st.apply(&events.Event{V: events.Version, Name: events.EventEnqueued, AccessKey: ak, SessionID: sid, Session: sp}, seq)
				live = append(live, ak+"."+sid)
			case op < 5:
				k := live[rng.IntN(len(live))]
				sess := st.sessions[k]
				if sess == nil {
					continue
				}
				st.apply(&events.Event{V: events.Version, Name: events.EventTerminateRequest, AccessKey: sess.spec.AccessKey, SessionID: sess.spec.ID}, seq)
			case op < 6:
				k := live[rng.IntN(len(live))]
				if sess := st.sessions[k]; sess != nil {
					name := []events.Name{events.EventCancelled, events.EventError}[rng.IntN(2)]
					st.apply(&events.Event{V: events.Version, Name: name, AccessKey: sess.spec.AccessKey, SessionID: sess.spec.ID, AgentID: sess.agentID}, seq)
				}
			case op < 7:
				id := fmt.Sprintf("a%d", rng.IntN(8))
				info := &events.AgentInfo{V: events.Version, ID: id, ScalingGroup: []string{"g", "h", "i"}[rng.IntN(3)],
					Capacity: map[string]string{"cpu": fmt.Sprint(32 + rng.IntN(64)), "mem": "256g", "cuda.device": fmt.Sprint(rng.IntN(2))}}
				if err := st.heartbeat(info, now); err != nil {
					t.Fatal(err)
				}
			case op >= 10:
				// A ledger entry reserving one to three sessions, at their
				// last sequence (live), or one before (void at once), or
				// later (a view ahead of ours).
				id := fmt.Sprintf("a%d", rng.IntN(8))
				ev := &events.Event{V: events.Version, Name: events.EventAgentLedger, AccessKey: events.LedgerOwner, SessionID: id, AgentID: id}
				for range 1 + rng.IntN(3) {
					k := live[rng.IntN(len(live))]
					sess := st.sessions[k]
					if sess == nil {
						continue
					}
					r := events.Reservation{AccessKey: sess.spec.AccessKey, SessionID: sess.spec.ID, Slots: sess.spec.Slots, Seq: sess.lastSeq}
					switch rng.IntN(4) {
					case 0:
						r.Seq--
					case 1:
						r.Seq += 2
					}
					ev.Reservations = append(ev.Reservations, r)
					resv.add(id, k, r.Seq, sess.lastSeq)
				}
				st.apply(ev, seq)
			default:
				k := live[rng.IntN(len(live))]
				sess := st.sessions[k]
				if sess == nil {
					continue
				}
				n := lifecycle[next[k]%len(lifecycle)]
				next[k]++
				var steps []events.Step
				if n == events.EventPreparing && rng.IntN(2) == 0 {
					// An agent's folded start: the steps in session_started.
					for _, s := range []events.Name{events.EventPreparing, events.EventPrepared, events.EventCreating, events.EventKernelStarted} {
						steps = append(steps, events.Step{Name: s})
					}
					n = events.EventStarted
					next[k] += 3
				}
				ev := &events.Event{V: events.Version, Name: n, AccessKey: sess.spec.AccessKey, SessionID: sess.spec.ID, Session: sess.spec, Steps: steps}
				if n == events.EventScheduled {
					ev.AgentID = fmt.Sprintf("a%d", rng.IntN(8))
				} else {
					ev.AgentID = sess.agentID
				}
				st.apply(ev, seq)
			}
			if err := checkIndexes(st, resv); err != nil {
				t.Fatalf("seed %d step %d: %v", seed, i, err)
			}
		}
	}
}

// reservations are the reservations a test applied: agent → session key
// → the highest reserved sequence that was live when applied.
type reservations map[string]map[string]uint64

// add records a reservation of k on agent at seq, applied when k's last
// sequence was last.
func (r reservations) add(agent, k string, seq, last uint64) {
	if seq < last {
		return // void on arrival
	}
	if r[agent] == nil {
		r[agent] = map[string]uint64{}
	}
	r[agent][k] = max(r[agent][k], seq)
}

// checkIndexes compares every index with what a walk of the state finds,
// and what counts against each agent with what is placed there plus the
// live reservations of resv.
func checkIndexes(st *state, resv reservations) error {
	for _, a := range st.agents {
		want := slots.Set{}
		for _, sess := range st.sessions {
			if sess.status.HoldsCapacity() && sess.agentID == a.id {
				want, _ = want.Add(sess.slots)
			}
		}
		placed := want.Clone()
		reserved := slots.Set{}
		live := 0
		for k, seq := range resv[a.id] {
			if sess := st.sessions[k]; sess != nil && sess.status == events.StatusPending && sess.lastSeq <= seq {
				live++
				want, _ = want.Add(sess.slots)
				reserved, _ = reserved.Add(sess.slots)
				if !sess.reservedOn(a) {
					return fmt.Errorf("session %s does not list its reservation on %s", k, a.id)
				}
			}
		}
		if !c0(a.placed).Equal(placed) || !c0(a.reserved).Equal(reserved) || !c0(a.used).Equal(want) {
			return fmt.Errorf("agent %s placed %s reserved %s used %s, want %s %s %s", a.id, a.placed, a.reserved, a.used, placed, reserved, want)
		}
		if len(a.resv) != live {
			return fmt.Errorf("agent %s holds %d reservations, want %d", a.id, len(a.resv), live)
		}
	}
	for k, sess := range st.sessions {
		for _, a := range sess.resv {
			if _, ok := a.resv[k]; !ok {
				return fmt.Errorf("session %s lists a reservation on %s that the agent does not hold", k, a.id)
			}
		}
	}
	running := map[string]int{}
	held := map[string]map[string]slots.Set{}
	terminating := map[*session]struct{}{}
	for _, sess := range st.sessions {
		if sess.terminateReason != "" {
			terminating[sess] = struct{}{}
		}
		if !sess.status.HoldsCapacity() {
			continue
		}
		running[sess.spec.AccessKey]++
		g := held[sess.spec.ScalingGroup]
		if g == nil {
			g = map[string]slots.Set{}
			held[sess.spec.ScalingGroup] = g
		}
		u := g[sess.spec.AccessKey]
		if u == nil {
			u = slots.Set{}
		}
		u, _ = u.Add(sess.slots)
		g[sess.spec.AccessKey] = u
	}
	if !maps.Equal(running, st.running) {
		return fmt.Errorf("running %v, want %v", st.running, running)
	}
	if !maps.Equal(terminating, st.terminating) {
		return fmt.Errorf("%d terminating, want %d", len(st.terminating), len(terminating))
	}
	nonzero := map[string]map[string]slots.Set{} // st.held keeps emptied sums
	for g, m := range st.held {
		for ak, u := range m {
			if !u.IsZero() {
				if nonzero[g] == nil {
					nonzero[g] = map[string]slots.Set{}
				}
				nonzero[g][ak] = u
			}
		}
	}
	if !maps.EqualFunc(held, nonzero, func(a, b map[string]slots.Set) bool {
		return maps.EqualFunc(a, b, slots.Set.Equal)
	}) {
		return fmt.Errorf("held %v, want %v", st.held, held)
	}
	groups := map[string][]*agent{}
	for _, a := range st.agents {
		groups[a.info.ScalingGroup] = append(groups[a.info.ScalingGroup], a)
		var cv, uv vec = make(vec, len(st.keys)), make(vec, len(st.keys))
		for k, q := range a.capacity {
			if q != 0 {
				cv[st.keys[k]] = q
			}
		}
		for k, q := range a.used {
			if q != 0 {
				uv[st.keys[k]] = q
			}
		}
		if !slices.Equal(cv, a.cv) || !slices.Equal(uv, a.uv) {
			return fmt.Errorf("agent %s vectors %v %v, want %v %v", a.id, a.cv, a.uv, cv, uv)
		}
		if a.free != freeScore(a.capacity, a.used) {
			return fmt.Errorf("agent %s free %d, want %d", a.id, a.free, freeScore(a.capacity, a.used))
		}
	}
	for g, l := range groups {
		slices.SortFunc(l, agentOrder)
		if !slices.Equal(l, st.groups[g]) {
			return fmt.Errorf("group %q lists %d agents, want %d", g, len(st.groups[g]), len(l))
		}
	}
	for g, l := range st.groups {
		if len(l) > 0 && len(groups[g]) == 0 {
			return fmt.Errorf("group %q lists %d agents, want none", g, len(l))
		}
	}
	return nil
}
