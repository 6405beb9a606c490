package scheduler

import (
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/bai-sh/bai/pkg/events"
	"github.com/bai-sh/bai/pkg/slots"
)

// Policy orders a scaling group's pending queue (after priority).
type Policy string

// The queue policies.
const (
	// FIFO places first come first served. A head that does not fit
	// blocks the queue for SkipAfter rounds, then is passed over; but a
	// session behind it is held back one round at most: after that it is
	// placed when it fits, blocked queue or not (issue 13: 1,015
	// sessions that fit nowhere, each blocking three rounds, kept the
	// small sessions of another key waiting 270 s while there was room).
	FIFO Policy = "fifo"
	// LIFO places the newest first, passing over what does not fit.
	LIFO Policy = "lifo"
	// DRF places first the sessions of the access key with the lowest
	// dominant share of the group's capacity, each key's in priority then
	// enqueue order, passing over what does not fit. The default: with one
	// key pending it is first come first served without head blocking,
	// with several no key's backlog delays another's.
	DRF Policy = "drf"
)

// Selector chooses the agent among those a session fits on.
type Selector string

// The agent selectors.
const (
	Dispersed    Selector = "dispersed"    // the most free capacity left
	Concentrated Selector = "concentrated" // the least free capacity left
	RoundRobin   Selector = "round-robin"  // the next agent by id after the last one used
)

// GroupPolicy is one scaling group's scheduling configuration.
type GroupPolicy struct {
	Policy   Policy   // default DRF
	Selector Selector // default Dispersed
	// SkipAfter is how many placement rounds a FIFO head that fits nowhere
	// blocks the queue before it is passed over. Default 3. Whatever it
	// is, each session is held back behind a blocked head one round at
	// most.
	SkipAfter int
	// PendingTimeout cancels a session pending longer (reason
	// pending-timeout). 0: never.
	PendingTimeout time.Duration
}

func (g *GroupPolicy) fill() error {
	switch g.Policy {
	case "":
		g.Policy = DRF
	case FIFO, LIFO, DRF:
	default:
		return fmt.Errorf("%w: unknown policy %q (fifo, lifo, drf)", ErrConfig, g.Policy)
	}
	switch g.Selector {
	case "":
		g.Selector = Dispersed
	case Dispersed, Concentrated, RoundRobin:
	default:
		return fmt.Errorf("%w: unknown agent selector %q (dispersed, concentrated, round-robin)", ErrConfig, g.Selector)
	}
	if g.SkipAfter < 0 || g.PendingTimeout < 0 {
		return fmt.Errorf("%w: negative skip-after or pending timeout", ErrConfig)
	}
	if g.SkipAfter == 0 {
		g.SkipAfter = 3
	}
	return nil
}

// round is one placement round over one scaling group.
type round struct {
	st      *state
	id      uint64 // tells this round's tentative placements (agent.tv)
	group   string
	gp      GroupPolicy
	now     time.Time
	timeout time.Duration
	agents  []*agent       // the group's agents, by id, live or not (see live)
	failed  []slots.Set    // requests that fit nowhere this round
	why     []string       // for each of failed, what is short (shortage)
	placed  map[string]int // access key → sessions placed this round (all groups)
	// lastWhy is what the last pick that found no agent found short.
	lastWhy string
	// held tells whether a FIFO queue held a session back this round.
	held bool
	// tentative placements of this round, committed together at its end.
	batch []tentative
	// scratch holds an agent's used vector less a reservation (pick).
	scratch vec
}

// newRound starts a round over group; placed is shared by the rounds of
// one placement pass.
func (st *state) newRound(group string, gp GroupPolicy, now time.Time, timeout time.Duration, placed map[string]int) *round {
	st.rounds++
	return &round{st: st, id: st.rounds, group: group, gp: gp, now: now, timeout: timeout, placed: placed, agents: st.groups[group]}
}

// live reports whether a takes placements this round.
func (r *round) live(a *agent) bool { return a.live(r.now, r.timeout) }

// running counts ak's sessions holding capacity, with this round's.
func (r *round) running(ak string) int { return r.st.running[ak] + r.placed[ak] }

// used is what is placed on a, with this round's tentative placements,
// and its freeVec.
func (r *round) used(a *agent) (vec, int64) {
	if a.tround == r.id {
		return a.tv, a.tfree
	}
	return a.uv, a.free
}

// add places sess on a tentatively. A reservation of sess on a is
// counted already: it becomes this placement.
func (r *round) add(a *agent, sess *session) {
	if a.tround != r.id {
		a.tv = append(a.tv[:0], a.uv...)
		a.tround = r.id
	}
	if sess.reservedOn(a) {
		return
	}
	if req, ok := r.st.request(sess); ok {
		addVec(a.tv, req)
	}
	a.tfree = freeVec(a.cv, a.tv)
}

type tentative struct {
	sess  *session
	agent *agent
}

// queue lists the group's pending sessions in the order the policy tries
// them first: priority, then enqueue order (LIFO: reversed).
func (st *state) queues() map[string][]*session {
	out := map[string][]*session{}
	for _, s := range st.pending {
		if s.terminateReason == "" {
			out[s.spec.ScalingGroup] = append(out[s.spec.ScalingGroup], s)
		}
	}
	return out
}

func sortQueue(q []*session, p Policy) {
	sort.Slice(q, func(i, j int) bool {
		if q[i].priority != q[j].priority {
			return q[i].priority > q[j].priority
		}
		if p == LIFO {
			return q[i].enqSeq > q[j].enqSeq
		}
		return q[i].enqSeq < q[j].enqSeq
	})
}

// predicates checks what must hold before a session is tried on agents;
// it returns why it must wait ("" when it may go), and cancels (through
// terminateReason) one whose dependency failed.
func (r *round) predicates(s *session) (events.Reason, string) {
	sp := s.spec
	if sp.StartsAt != nil && r.now.Before(*sp.StartsAt) {
		return events.ReasonStartsAt, "starts at " + sp.StartsAt.UTC().Format(time.RFC3339)
	}
	var waiting []string
	for _, dep := range sp.Depends {
		k := key(sp.AccessKey, dep)
		if f, ok := r.st.done[k]; ok {
			if !f.ok {
				r.st.setTerminate(s, events.ReasonDependencyFailed)
				return events.ReasonDependencyFailed, dep
			}
			continue
		}
		if d := r.st.sessions[k]; d == nil || d.enqSeq > s.enqSeq {
			// Never enqueued before it: no such session (or long gone).
			r.st.setTerminate(s, events.ReasonDependencyFailed)
			return events.ReasonDependencyFailed, dep + " unknown"
		}
		waiting = append(waiting, dep)
	}
	if len(waiting) > 0 {
		return events.ReasonDependsPending, strings.Join(waiting, ",")
	}
	if len(sp.MinSlots) > 0 {
		min, err := slots.ParseMap(sp.MinSlots)
		if err == nil {
			for k, q := range min {
				if s.slots[k] < q {
					return events.ReasonImageMinimum, fmt.Sprintf("%s below the image minimum %s", k, slots.FormatValue(k, q))
				}
			}
		}
	}
	return "", ""
}

// overLimit reports why s may not go for its keypair's concurrency limit
// ("" when it may); checked at each try, as placements count.
func (r *round) overLimit(s *session) string {
	sp := s.spec
	if n := r.running(sp.AccessKey); sp.ConcurrencyLimit > 0 && n >= sp.ConcurrencyLimit {
		return fmt.Sprintf("%d of %d sessions running", n, sp.ConcurrencyLimit)
	}
	return ""
}

// pick chooses the live agent for s with the group's selector, or nil
// when s fits nowhere. Dispersed and concentrated take the agent with the
// best score, the first by id among equals; round-robin the first that
// fits after the last one used.
//
// On an agent that holds a live reservation of s (a placement announced
// and not published: a crash, or a refusal), s's own reservation is not
// counted against it: placing s there turns the reservation into the
// placement, counted once. Without that, a session reserved on an agent
// it just fills could never be placed there.
func (r *round) pick(s *session) *agent {
	own := len(s.resv) > 0
	for i, f := range r.failed {
		if !own && dominates(s.slots, f) {
			r.lastWhy = r.why[i]
			return nil // a smaller request did not fit this round
		}
	}
	var best *agent
	req, ok := r.st.request(s)
	if n := len(r.agents); ok && n > 0 {
		var bestScore int64
		// Dispersed: an agent whose free score is no better than the best
		// one's score with s cannot win (see freeVec).
		bound := r.gp.Selector != Concentrated && r.gp.Selector != RoundRobin && !s.rvNeg
		start := 0
		if r.gp.Selector == RoundRobin {
			last := r.st.rr[r.group]
			start = sort.Search(n, func(i int) bool { return r.agents[i].info.ID > last })
		}
		for i := range n {
			j := start + i
			if j >= n {
				j -= n
			}
			a := r.agents[j]
			used, free := r.used(a)
			if own && s.reservedOn(a) {
				r.scratch = append(r.scratch[:0], used...)
				subVec(r.scratch, req)
				used = r.scratch
				free = freeVec(a.cv, used)
			}
			if bound && best != nil && free <= bestScore {
				continue
			}
			if !fitsVec(used, req, a.cv) || !r.live(a) {
				continue
			}
			if r.gp.Selector == RoundRobin {
				return a
			}
			score := scoreVec(a.cv, used, req)
			if r.gp.Selector == Concentrated {
				score = -score
			}
			if best == nil || score > bestScore {
				best, bestScore = a, score
			}
		}
	}
	if best == nil {
		r.lastWhy = r.shortage(s)
		r.failed = append(r.failed, s.slots)
		r.why = append(r.why, r.lastWhy)
	}
	return best
}

// dominates reports whether a asks at least as much as b of every slot.
func dominates(a, b slots.Set) bool {
	for k, q := range b {
		if a[k] < q {
			return false
		}
	}
	return true
}

// dominantShare is the largest fraction of the group's total that used
// takes of any slot kind.
func dominantShare(used, total slots.Set) float64 {
	var m float64
	for k, q := range used {
		if t := total[k]; t > 0 {
			if f := float64(q) / float64(t); f > m {
				m = f
			}
		}
	}
	return m
}

// Check reports what is wrong with g, before anything starts.
func (g GroupPolicy) Check() error { return g.fill() }

// shortage says why s fits on no agent of the round's group, for its
// status_info: for each slot it asks, on how many of the live agents too
// little of it is free, and the most that is free on any, e.g. "cpu short
// on all 3 agents (largest free cpu=1)".
func (r *round) shortage(s *session) string {
	live, drained := 0, 0
	for _, a := range r.agents {
		switch {
		case r.live(a):
			live++
		case a.drained:
			drained++
		}
	}
	if live == 0 {
		switch {
		case len(r.agents) == 0:
			return "no agent in scaling group " + r.group
		case drained == len(r.agents):
			return fmt.Sprintf("every agent of scaling group %s is drained (%d)", r.group, drained)
		case drained > 0:
			return fmt.Sprintf("no live agent in scaling group %s (%d drained, %d silent or gone)", r.group, drained, len(r.agents)-drained)
		}
		return fmt.Sprintf("no live agent in scaling group %s (%d silent or gone)", r.group, len(r.agents))
	}
	keys := make([]string, 0, len(s.slots))
	for k, q := range s.slots {
		if q > 0 {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	var parts []string
	for _, k := range keys {
		q := s.slots[k]
		i, ok := r.st.keys[k]
		if !ok {
			parts = append(parts, "no agent has "+k)
			continue
		}
		short := 0
		var most slots.Quantity
		for _, a := range r.agents {
			if !r.live(a) {
				continue
			}
			used, _ := r.used(a)
			var free slots.Quantity
			if i < len(a.cv) && i < len(used) {
				free = max(a.cv[i]-used[i], 0)
			}
			most = max(most, free)
			if free < q {
				short++
			}
		}
		switch {
		case short == 0:
		case live == 1:
			parts = append(parts, fmt.Sprintf("%s short on the one agent (free %s=%s)", k, k, slots.FormatValue(k, most)))
		case short == live:
			parts = append(parts, fmt.Sprintf("%s short on all %d agents (largest free %s=%s)", k, live, k, slots.FormatValue(k, most)))
		default:
			parts = append(parts, fmt.Sprintf("%s short on %d of %d agents (largest free %s=%s)", k, short, live, k, slots.FormatValue(k, most)))
		}
	}
	if len(parts) == 0 {
		return fmt.Sprintf("no single agent of %d has all of it free", live)
	}
	return strings.Join(parts, "; ")
}

// infoKey is what tells one pending reason from another: the message
// without its figures (what is in parentheses, and the numbers), so that
// a session's status_info is published again when what is short changes,
// not each time the free capacity moves (a big queue would flood the log).
func infoKey(reason events.Reason, msg string) string {
	b := make([]byte, 0, len(reason)+1+len(msg))
	b = append(append(b, reason...), ':')
	depth := 0
	for i := 0; i < len(msg); i++ {
		c := msg[i]
		switch {
		case c == '(':
			depth++
		case c == ')' && depth > 0:
			depth--
		case depth > 0:
		case c >= '0' && c <= '9':
			if len(b) == 0 || b[len(b)-1] != '#' {
				b = append(b, '#')
			}
		default:
			b = append(b, c)
		}
	}
	return string(b)
}
