package scheduler

import (
	"fmt"
	"sort"
	"time"

	"github.com/bai-sh/bai/pkg/events"
	"github.com/bai-sh/bai/pkg/slots"
)

// session is what the scheduler tracks of one live session.
type session struct {
	spec    *events.SessionSpec
	slots   slots.Set
	status  events.Status
	lastSeq uint64 // the log sequence of the session's last event
	enqSeq  uint64 // the sequence of its session_enqueued: FIFO order
	agentID string
	// terminateReason is set while a terminate request waits to be acted on.
	terminateReason events.Reason
}

// agent is one agent's heartbeat and the slots placed on it.
type agent struct {
	info     events.AgentInfo
	capacity slots.Set
	used     slots.Set
	seen     time.Time
}

// state is the replayed log plus the agents; only the decision loop
// touches it.
type state struct {
	sessions map[string]*session // by access key + "." + session id
	pending  map[string]*session
	agents   map[string]*agent
}

func newState() *state {
	return &state{
		sessions: map[string]*session{},
		pending:  map[string]*session{},
		agents:   map[string]*agent{},
	}
}

func key(ak, sid string) string { return ak + "." + sid }

func (st *state) agent(id string) *agent {
	a := st.agents[id]
	if a == nil {
		a = &agent{capacity: slots.Set{}, used: slots.Set{}}
		st.agents[id] = a
	}
	return a
}

// apply moves the state by one event of the log (or one of our own
// decisions, applied before the log echoes it back). Duplicates and
// out-of-order events are absorbed by the status table.
func (st *state) apply(ev *events.Event, seq uint64) {
	k := key(ev.AccessKey, ev.SessionID)
	sess := st.sessions[k]
	if ev.Name == events.EventEnqueued {
		if sess != nil || ev.Session == nil {
			return
		}
		req, err := slots.ParseMap(ev.Session.Slots)
		if err != nil {
			return // the gateway admitted it; nothing sane to place
		}
		sess = &session{spec: ev.Session, slots: req, status: events.StatusPending, lastSeq: seq, enqSeq: seq}
		st.sessions[k] = sess
		st.pending[k] = sess
		return
	}
	if sess == nil {
		return
	}
	if seq > sess.lastSeq {
		sess.lastSeq = seq
	}
	if events.FromOtherAgent(sess.agentID, ev) {
		return // an agent speaking for a kernel not on it (issue 4)
	}
	if ev.Name == events.EventTerminateRequest {
		if !sess.status.Final() && sess.status != events.StatusTerminating {
			sess.terminateReason = ev.Reason
			if sess.terminateReason == "" {
				sess.terminateReason = events.ReasonUserRequested
			}
		}
		return
	}
	to := ev.Status()
	if to == events.StatusNone || !events.CanTransition(sess.status, to) {
		return
	}
	from := sess.status
	sess.status = to
	if to == events.StatusScheduled {
		sess.agentID = ev.AgentID
		delete(st.pending, k)
		a := st.agent(ev.AgentID)
		if used, err := a.used.Add(sess.slots); err == nil {
			a.used = used
		}
	}
	if to != events.StatusPending {
		delete(st.pending, k)
	}
	if to == events.StatusTerminating || to.Final() {
		sess.terminateReason = ""
	}
	if to.Final() {
		if from.HoldsCapacity() && sess.agentID != "" {
			a := st.agent(sess.agentID)
			if used, err := a.used.Sub(sess.slots); err == nil {
				a.used = used
			}
		}
		delete(st.sessions, k)
	}
}

// heartbeat records an agent's advertised capacity.
func (st *state) heartbeat(info *events.AgentInfo, now time.Time) error {
	capacity, err := slots.ParseMap(info.Capacity)
	if err != nil {
		return fmt.Errorf("agent %s capacity: %w", info.ID, err)
	}
	a := st.agent(info.ID)
	a.info = *info
	a.capacity = capacity
	a.seen = now
	return nil
}

// agentGone forgets an agent's heartbeat; what was placed there stays in
// the ledger until its sessions end.
func (st *state) agentGone(id string) {
	if a := st.agents[id]; a != nil {
		a.seen = time.Time{}
		a.capacity = slots.Set{}
	}
}

// pendingInOrder lists pending sessions first come, first served.
func (st *state) pendingInOrder() []*session {
	out := make([]*session, 0, len(st.pending))
	for _, s := range st.pending {
		if s.terminateReason == "" {
			out = append(out, s)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].enqSeq < out[j].enqSeq })
	return out
}

// toTerminate lists sessions with a terminate request not yet acted on.
func (st *state) toTerminate() []*session {
	var out []*session
	for _, s := range st.sessions {
		if s.terminateReason != "" {
			out = append(out, s)
		}
	}
	return out
}

// pick chooses, among live agents of the session's scaling group with room
// for it, the one with the most free capacity (dispersed placement).
func (st *state) pick(sess *session, now time.Time, timeout time.Duration) *agent {
	var best *agent
	var bestScore int64
	for _, a := range st.agents {
		if a.seen.IsZero() || now.Sub(a.seen) > timeout || a.info.ScalingGroup != sess.spec.ScalingGroup {
			continue
		}
		if !a.used.AddFits(sess.slots, a.capacity) {
			continue
		}
		score := freeScoreWith(a.capacity, a.used, sess.slots)
		if best == nil || score > bestScore || score == bestScore && a.info.ID < best.info.ID {
			best, bestScore = a, score
		}
	}
	return best
}

// freeScore ranks how much room is left: the sum over slot kinds of the
// free fraction, in parts per million. It only ranks agents; whether a
// session fits is decided by exact slot arithmetic.
func freeScore(capacity, used slots.Set) int64 {
	var score int64
	for k, c := range capacity {
		if c <= 0 {
			continue
		}
		free := c - used[k]
		score += int64(float64(free) / float64(c) * 1e6)
	}
	return score
}
