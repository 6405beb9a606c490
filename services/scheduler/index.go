package scheduler

import (
	"slices"
	"strings"

	"github.com/bai-sh/bai/pkg/events"
	"github.com/bai-sh/bai/pkg/slots"
)

// The indexes below are kept up to date as the state moves, so that a
// decision round costs what its pending sessions need rather than a walk
// of every session and agent:
//
//   - slot sets as dense vectors over the keys the agents have or hold, so
//     that a pick compares integers instead of looking up maps;
//   - each scaling group's agents in id order;
//   - the sessions with a terminate request not yet acted on;
//   - per access key, the sessions holding capacity, and per group and
//     access key the slots they hold (DRF).

// vec is a slot set as a vector indexed by state.keys.
type vec []slots.Quantity

// keyIndex returns the vector index of slot key k, registering it when
// new: every agent's vectors grow by one (rare: the keys are those the
// agents advertise, and those of placed requests).
func (st *state) keyIndex(k string) int {
	if i, ok := st.keys[k]; ok {
		return i
	}
	i := len(st.keys)
	st.keys[k] = i
	for _, a := range st.agents {
		a.cv = append(a.cv, 0)
		a.uv = append(a.uv, 0)
	}
	return i
}

// fill sets v, the vector of an agent of the state, to s, registering
// s's nonzero keys (which grows v too).
func (st *state) fill(v *vec, s slots.Set) {
	clear(*v)
	for k, q := range s {
		if q == 0 {
			continue
		}
		i, ok := st.keys[k]
		if !ok {
			i = st.keyIndex(k)
		}
		(*v)[i] = q
	}
}

// recount sets what counts against a's capacity from what is placed and
// reserved there.
func (st *state) recount(a *agent) {
	if a.reserved.IsZero() {
		st.setUsed(a, a.placed) // sets are replaced, never changed in place
		return
	}
	used, err := a.placed.Add(a.reserved)
	if err != nil {
		return // beyond any capacity: nothing sane to count
	}
	st.setUsed(a, used)
}

// setUsed sets what counts against a's capacity.
func (st *state) setUsed(a *agent, used slots.Set) {
	a.used = used
	st.fill(&a.uv, used)
	a.free = freeVec(a.cv, a.uv)
}

// setCapacity sets what a advertises.
func (st *state) setCapacity(a *agent, capacity slots.Set) {
	a.capacity = capacity
	st.fill(&a.cv, capacity)
	a.free = freeVec(a.cv, a.uv)
}

// request returns s's request as a vector over the known keys. ok is
// false when s asks for some of a key that no agent has nor holds: it
// fits nowhere.
func (st *state) request(s *session) (v vec, ok bool) {
	if s.rv == nil || len(s.rv) != len(st.keys) {
		s.rv, s.rvOK, s.rvNeg = make(vec, len(st.keys)), true, false
		for k, q := range s.slots {
			if q < 0 {
				s.rvNeg = true
			}
			if i, found := st.keys[k]; found {
				s.rv[i] = q
			} else if q > 0 {
				s.rvOK = false
			}
		}
	}
	return s.rv, s.rvOK
}

// fitsVec is slots.Set.AddFits over vectors of the same length: whether
// used + req fits capacity, a sum that overflows not fitting.
func fitsVec(used, req, capacity vec) bool {
	req, capacity = req[:len(used)], capacity[:len(used)]
	for k, a := range used {
		b := req[k]
		sum := a + b
		if (b > 0 && sum < a) || (b < 0 && sum > a) {
			return false
		}
		if sum > 0 && sum > capacity[k] {
			return false
		}
	}
	return true
}

// scoreVec is the free score (freeScoreWith in the tests: the sum over slot
// kinds of the free fraction, in parts per million, after adding req)
// over vectors of the same length. It only ranks agents; whether a session
// fits is decided by exact slot arithmetic.
func scoreVec(capacity, used, req vec) int64 {
	used, req = used[:len(capacity)], req[:len(capacity)]
	var score int64
	for k, c := range capacity {
		if c <= 0 {
			continue
		}
		free := c - (used[k] + req[k])
		score += int64(float64(free) / float64(c) * 1e6)
	}
	return score
}

// freeVec is scoreVec with nothing added. It bounds scoreVec from above
// for a request of no negative quantity on an agent it fits: each term
// only shrinks as free does (conversion, division by a positive number,
// multiplication by one and truncation are all monotonic), and on an
// agent it fits every term is between 0 and 1e6, so the sum is exact.
func freeVec(capacity, used vec) int64 {
	used = used[:len(capacity)]
	var score int64
	for k, c := range capacity {
		if c <= 0 {
			continue
		}
		score += int64(float64(c-used[k]) / float64(c) * 1e6)
	}
	return score
}

// addVec adds b to a in place; on overflow a is left as it was and it
// reports false.
func addVec(a, b vec) bool {
	b = b[:len(a)]
	for k, x := range a {
		y := b[k]
		if s := x + y; (y > 0 && s < x) || (y < 0 && s > x) {
			return false
		}
	}
	for k := range a {
		a[k] += b[k]
	}
	return true
}

// subVec subtracts b from a in place (b was added to a before).
func subVec(a, b vec) {
	b = b[:len(a)]
	for k := range a {
		a[k] -= b[k]
	}
}

// agentOrder orders a group's agents as a round tries them: by id (the
// map key breaks ties between agents not heard from yet).
func agentOrder(a, b *agent) int {
	if c := strings.Compare(a.info.ID, b.info.ID); c != 0 {
		return c
	}
	return strings.Compare(a.id, b.id)
}

// regroup moves a to the group list that info puts it in; call it before
// a.info = info.
func (st *state) regroup(a *agent, info *events.AgentInfo) {
	if a.info.ScalingGroup == info.ScalingGroup && a.info.ID == info.ID {
		return
	}
	st.delist(a)
	a.info.ScalingGroup, a.info.ID = info.ScalingGroup, info.ID
	st.enlist(a)
}

// enlist adds a to its group's list.
func (st *state) enlist(a *agent) {
	l := st.groups[a.info.ScalingGroup]
	i, _ := slices.BinarySearchFunc(l, a, agentOrder)
	st.groups[a.info.ScalingGroup] = slices.Insert(l, i, a)
}

// delist takes a off its group's list.
func (st *state) delist(a *agent) {
	l := st.groups[a.info.ScalingGroup]
	if i, ok := slices.BinarySearchFunc(l, a, agentOrder); ok && l[i] == a {
		st.groups[a.info.ScalingGroup] = slices.Delete(l, i, i+1)
	}
}

// setTerminate records (reason "" clears) a terminate request on sess
// that waits to be acted on.
func (st *state) setTerminate(sess *session, reason events.Reason) {
	sess.terminateReason = reason
	if reason == "" {
		delete(st.terminating, sess)
	} else {
		st.terminating[sess] = struct{}{}
	}
}

// moved updates the counts of sessions holding capacity when sess moves
// from one status to another.
func (st *state) moved(sess *session, from, to events.Status) {
	was, is := from.HoldsCapacity(), to.HoldsCapacity()
	if was == is {
		return
	}
	ak := sess.spec.AccessKey
	if is {
		st.running[ak]++
		st.hold(sess)
		return
	}
	if st.running[ak]--; st.running[ak] <= 0 {
		delete(st.running, ak)
	}
	st.release(sess)
}

// hold adds sess's slots to what its access key holds in its group. A sum
// that would overflow is left out (and so is its release).
func (st *state) hold(sess *session) {
	g := st.held[sess.spec.ScalingGroup]
	if g == nil {
		g = map[string]slots.Set{}
		st.held[sess.spec.ScalingGroup] = g
	}
	u := g[sess.spec.AccessKey]
	if u == nil {
		u = slots.Set{}
		g[sess.spec.AccessKey] = u
	}
	for k, q := range sess.slots {
		if a := u[k]; (q > 0 && a+q < a) || (q < 0 && a+q > a) {
			return
		}
	}
	for k, q := range sess.slots {
		u[k] += q
	}
	sess.held = true
}

// release takes sess's slots away from what its access key holds. The
// emptied sum stays (one per group and access key ever placed): the next
// session of the key reuses it.
func (st *state) release(sess *session) {
	if !sess.held {
		return
	}
	sess.held = false
	u := st.held[sess.spec.ScalingGroup][sess.spec.AccessKey]
	for k, q := range sess.slots {
		u[k] -= q
	}
}
