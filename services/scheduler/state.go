package scheduler

import (
	"fmt"
	"time"

	"github.com/bai-sh/bai/pkg/events"
	"github.com/bai-sh/bai/pkg/slots"
)

// session is what the scheduler tracks of one live session.
type session struct {
	spec     *events.SessionSpec
	slots    slots.Set
	priority int
	status   events.Status
	since    time.Time // when it entered status (the event's time)
	lastSeq  uint64    // the log sequence of the session's last event
	enqSeq   uint64    // the sequence of its session_enqueued: FIFO order
	agentID  string
	// epoch is the epoch of its agent that last spoke of its kernel (the
	// placement, the agent's events) or was asked about it (a
	// kernel_check); see checkRestarted.
	epoch  uint64
	failed bool // an error or a failure was reported
	// terminateReason is set while a terminate request waits to be acted on.
	terminateReason events.Reason
	// retries counts the rounds it did not fit at the head of a FIFO queue.
	retries int
	// waited: a blocked FIFO queue held it back a round already.
	waited bool
	// info is the last pending reason published for it (infoKey), and
	// infoReason and infoMsg what it said.
	info       string
	infoReason events.Reason
	infoMsg    string
	// termTries counts the terminating orders sent past a deadline.
	termTries int
	// rv is slots as a vector (see state.request); rvOK is false when it
	// asks for a key no agent has.
	rv    vec
	rvOK  bool
	rvNeg bool // it asks a negative quantity of some key
	// held: its slots are counted in state.held.
	held bool
	// resv lists the agents holding a live reservation of it (see
	// reservation).
	resv []*agent
}

// finished is what is kept of a final session: enough for --depends and
// to recognize a late placement of it.
type finished struct {
	ok bool // TERMINATED without error or failure
}

// agent is one agent's heartbeat and the slots placed on it.
type agent struct {
	// What a pick reads first, together: capacity and used as vectors
	// over state.keys, kept with the sets below, and freeVec(cv, uv); tv
	// is used plus this round's tentative placements, and tfree its
	// freeVec, valid while tround is the round's id.
	cv, uv, tv  vec
	free, tfree int64
	tround      uint64
	seen        time.Time // the last heartbeat (or when we first heard of it)
	rev         uint64    // the revision of that heartbeat in the agents' bucket
	gone        bool      // its heartbeat key was deleted
	lost        bool      // declared lost; cleared by a new heartbeat
	drained     bool      // drained by an admin: no new placements (drain.go)

	id       string // its key in state.agents
	info     events.AgentInfo
	capacity slots.Set
	// used is what counts against capacity: placed plus reserved. The
	// vectors and free scores above follow it (setUsed).
	used     slots.Set
	placed   slots.Set // the slots of the sessions placed here holding capacity
	reserved slots.Set // the slots of the live reservations in resv
	// resv holds the live reservations on the agent's ledger, by session
	// key.
	resv map[string]reservation
}

// reservation is a placement announced on an agent's ledger (an
// agent_ledger event) and maybe not (yet) published. It counts against
// the agent's capacity while it can still become a placement: while its
// session is PENDING and the session's last sequence is at most seq, the
// sequence the placement is conditioned on. Once the session is placed
// (anywhere), ends, or has any later event on its subject, a placement
// conditioned on seq can never be stored: the reservation is void, for
// good (a session's sequence only grows and it never returns to PENDING).
// A session reserved several times on one agent counts once, with the
// highest seq (the only one that can still be live).
type reservation struct {
	seq  uint64
	sess *session
}

// orphan is a placement of a session that was already final (the loser of
// a cancel/place race between two schedulers): its agent must drop it.
type orphan struct {
	ak, sid, kid, agentID string
}

// state is the replayed log plus the agents; only the decision loop
// touches it.
type state struct {
	sessions map[string]*session // by access key + "." + session id
	pending  map[string]*session
	agents   map[string]*agent
	done     map[string]finished
	orphans  []orphan
	// mine holds the ids of our own decisions applied before the log
	// echoes them back.
	mine map[string]struct{}
	// ledger is, per agent, the sequence of the last agent_ledger event
	// on its ledger subject: the precondition of the next placement there.
	ledger map[string]uint64
	// dirty is set when something happened that may let a pending session
	// be placed.
	dirty bool
	rr    map[string]string // scaling group → agent id placed on last (round-robin)
	now   func() time.Time

	// Indexes (index.go).
	keys        map[string]int                  // slot key → vector index
	groups      map[string][]*agent             // scaling group → its agents, by id
	terminating map[*session]struct{}           // sessions with a terminateReason
	running     map[string]int                  // access key → sessions holding capacity
	held        map[string]map[string]slots.Set // group → access key → slots held
	rounds      uint64                          // the last round's id

	// The pending-info rate limit (decide.go infoTokens): tokens left
	// at infoAt, and spent since.
	infoAt              time.Time
	infoLeft, infoSpent int
}

func newState() *state {
	return &state{
		sessions: map[string]*session{},
		pending:  map[string]*session{},
		agents:   map[string]*agent{},
		done:     map[string]finished{},
		mine:     map[string]struct{}{},
		rr:       map[string]string{},
		ledger:   map[string]uint64{},
		now:      time.Now,

		keys:        map[string]int{},
		groups:      map[string][]*agent{},
		terminating: map[*session]struct{}{},
		running:     map[string]int{},
		held:        map[string]map[string]slots.Set{},
	}
}

func key(ak, sid string) string { return ak + "." + sid }

func (st *state) agent(id string) *agent {
	a := st.agents[id]
	if a == nil {
		n := len(st.keys)
		a = &agent{id: id, capacity: slots.Set{}, used: slots.Set{}, placed: slots.Set{}, reserved: slots.Set{},
			seen: st.now(), cv: make(vec, n), uv: make(vec, n)}
		st.agents[id] = a
		st.enlist(a)
	}
	return a
}

// applyMine applies one of our own decisions, published at seq, ahead of
// the log's echo.
func (st *state) applyMine(ev *events.Event, seq uint64) {
	st.apply(ev, seq)
	st.mine[ev.ID] = struct{}{}
}

// apply moves the state by one event of the log. Duplicates and
// out-of-order events are absorbed by the status table.
func (st *state) apply(ev *events.Event, seq uint64) {
	if _, echo := st.mine[ev.ID]; echo {
		delete(st.mine, ev.ID)
		return
	}
	if ev.Name == events.EventAgentLedger {
		if ev.AccessKey == events.LedgerOwner {
			if seq > st.ledger[ev.SessionID] {
				st.ledger[ev.SessionID] = seq
			}
			st.reserve(ev)
		}
		return
	}
	k := key(ev.AccessKey, ev.SessionID)
	sess := st.sessions[k]
	if sess != nil && len(sess.resv) > 0 {
		// Whatever this event does to the session, its reservations may
		// be void after it.
		defer st.voidReservations(sess)
	}
	if ev.Name == events.EventEnqueued {
		if sess != nil || ev.Session == nil {
			return
		}
		if _, ok := st.done[k]; ok {
			return
		}
		req, err := slots.ParseMap(ev.Session.Slots)
		if err != nil {
			return // the gateway admitted it; nothing sane to place
		}
		prio := ev.Session.EffectivePriority()
		sess = &session{spec: ev.Session, slots: req, priority: prio, status: events.StatusPending,
			since: st.eventTime(ev), lastSeq: seq, enqSeq: seq}
		st.sessions[k] = sess
		st.pending[k] = sess
		st.dirty = true
		return
	}
	if sess == nil {
		if _, ok := st.done[k]; ok && ev.Name == events.EventScheduled {
			st.orphans = append(st.orphans, orphan{ak: ev.AccessKey, sid: ev.SessionID, kid: ev.KernelID, agentID: ev.AgentID})
		}
		return
	}
	if seq > sess.lastSeq {
		sess.lastSeq = seq
	}
	if events.NotFromPlacedAgent(sess.agentID, ev) {
		return // an agent speaking for a kernel not on it (issue 12 §4)
	}
	if ev.AgentEpoch != 0 && ev.AgentID != "" &&
		(ev.AgentID == sess.agentID || sess.agentID == "" && ev.Name == events.EventScheduled) {
		sess.epoch = ev.AgentEpoch
	}
	switch ev.Name {
	case events.EventTerminateRequest:
		if !sess.status.Final() && sess.status != events.StatusTerminating {
			reason := ev.Reason
			if reason == "" {
				reason = events.ReasonUserRequested
			}
			st.setTerminate(sess, reason)
		}
		return
	case events.EventFailure:
		sess.failed = true
	case events.EventPendingInfo:
		sess.info, sess.infoReason, sess.infoMsg = infoKey(ev.Reason, ev.Message), ev.Reason, ev.Message
	}
	to, moved := events.Advance(sess.status, ev)
	if !moved {
		return
	}
	from := sess.status
	sess.status = to
	st.moved(sess, from, to)
	sess.since = st.eventTime(ev)
	if to == events.StatusError {
		sess.failed = true
	}
	if to == events.StatusScheduled {
		sess.agentID = ev.AgentID
		a := st.agent(ev.AgentID)
		if placed, err := a.placed.Add(sess.slots); err == nil {
			a.placed = placed
			st.recount(a)
		}
	}
	if to != events.StatusPending {
		delete(st.pending, k)
	}
	if to == events.StatusTerminating || to.Final() {
		st.setTerminate(sess, "")
	}
	if to.Final() {
		if from.HoldsCapacity() && sess.agentID != "" {
			a := st.agent(sess.agentID)
			if placed, err := a.placed.Sub(sess.slots); err == nil {
				a.placed = placed
				st.recount(a)
			}
			st.dirty = true
		}
		delete(st.sessions, k)
		st.done[k] = finished{ok: to == events.StatusTerminated && !sess.failed}
		st.dirty = true // dependants may go
	}
}

// eventTime is the event's time, never later than now, so a deadline
// survives a failover (the new leader counts from the log).
func (st *state) eventTime(ev *events.Event) time.Time {
	now := st.now()
	if ev.Time.IsZero() || ev.Time.After(now) {
		return now
	}
	return ev.Time
}

// heartbeat records an agent's advertised capacity.
func (st *state) heartbeat(info *events.AgentInfo, now time.Time) error {
	capacity, err := slots.ParseMap(info.Capacity)
	if err != nil {
		return fmt.Errorf("agent %s capacity: %w", info.ID, err)
	}
	a := st.agent(info.ID)
	if a.gone || a.lost || a.info.ScalingGroup != info.ScalingGroup || !a.capacity.Equal(capacity) {
		st.dirty = true
	}
	st.regroup(a, info)
	a.info = *info
	st.setCapacity(a, capacity)
	a.seen = now
	a.gone, a.lost = false, false
	return nil
}

// agentGone forgets an agent's heartbeat; what was placed there stays in
// the ledger until its sessions end (or the agent is declared lost).
func (st *state) agentGone(id string) {
	if a := st.agents[id]; a != nil {
		a.gone = true
		st.setCapacity(a, slots.Set{})
	}
}

// live reports whether a takes placements.
func (a *agent) live(now time.Time, timeout time.Duration) bool {
	return !a.gone && !a.lost && !a.drained && !a.seen.IsZero() && now.Sub(a.seen) <= timeout
}

// reserve records the reservations of an agent_ledger event that are
// live (see reservation). Replaying the log rebuilds them: the session's
// events before the ledger entry are applied before it, those after it
// void it as they come.
func (st *state) reserve(ev *events.Event) {
	if len(ev.Reservations) == 0 {
		return
	}
	a := st.agent(ev.SessionID)
	changed := false
	for _, r := range ev.Reservations {
		k := key(r.AccessKey, r.SessionID)
		sess := st.sessions[k]
		if sess == nil || sess.status != events.StatusPending || sess.lastSeq > r.Seq {
			continue // void already (or never a session we could place)
		}
		if old, ok := a.resv[k]; ok {
			if r.Seq > old.seq {
				a.resv[k] = reservation{seq: r.Seq, sess: sess}
			}
			continue // counted once
		}
		// What counts is the session's own request, which is what its
		// placement would hold (the payload's slots are the same, for
		// the reader of the log).
		reserved, err := a.reserved.Add(sess.slots)
		if err != nil {
			continue
		}
		if a.resv == nil {
			a.resv = map[string]reservation{}
		}
		a.resv[k] = reservation{seq: r.Seq, sess: sess}
		a.reserved = reserved
		sess.resv = append(sess.resv, a)
		changed = true
	}
	if changed {
		st.recount(a)
	}
}

// voidReservations drops the reservations of sess that can no longer
// become a placement, after an event of sess.
func (st *state) voidReservations(sess *session) {
	k := key(sess.spec.AccessKey, sess.spec.ID)
	keep := sess.resv[:0]
	for _, a := range sess.resv {
		r := a.resv[k]
		if sess.status == events.StatusPending && sess.lastSeq <= r.seq {
			keep = append(keep, a)
			continue
		}
		delete(a.resv, k)
		if reserved, err := a.reserved.Sub(sess.slots); err == nil {
			a.reserved = reserved
		}
		st.recount(a)
		if sess.agentID != a.id || !sess.status.HoldsCapacity() {
			st.dirty = true // capacity freed (not turned into this placement)
		}
	}
	clear(sess.resv[len(keep):])
	sess.resv = keep
}

// reservedOn reports whether sess holds a live reservation on a.
func (sess *session) reservedOn(a *agent) bool {
	for _, b := range sess.resv {
		if b == a {
			return true
		}
	}
	return false
}
