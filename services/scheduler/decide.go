package scheduler

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"sort"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/bai-sh/bai/pkg/events"
	"github.com/bai-sh/bai/pkg/slots"
)

// decide acts on the current state, as the leader: orphan placements,
// lost agents, terminate requests, deadlines, then placements. The
// time-driven checks run on ticks (timed) only. Each of its two steps
// (the decisions, then the placements on the state the decisions left)
// is planned holding s.mu, submitted without it, and applied holding it
// again (plan.go).
func (s *Service) decide(ctx context.Context, timed bool) {
	now := s.st.now()
	var sil *silence
	if timed {
		sil = s.probeAgents(ctx, now)
	}
	s.mu.Lock()
	s.infoBudget = s.st.infoTokens(now)
	p := s.planDecisions(now, timed, sil)
	s.mu.Unlock()
	s.run(ctx, p)
	s.mu.Lock()
	var pp *plan
	if s.st.dirty || timed {
		s.st.dirty = false
		pp = s.planPlacements(now)
	}
	s.mu.Unlock()
	s.run(ctx, pp)
}

// run submits p, unless it is empty, and applies what was stored.
func (s *Service) run(ctx context.Context, p *plan) {
	if p == nil || p.empty() {
		return
	}
	s.sub.submit(ctx, p)
	s.mu.Lock()
	s.applyPlan(p)
	s.mu.Unlock()
}

// planDecisions plans the step's decisions (the caller holds s.mu): the
// drop orders of orphan placements, the ends of the sessions of lost
// agents (sil, on ticks), the kernel checks, the terminations and the
// deadlines.
func (s *Service) planDecisions(now time.Time, timed bool, sil *silence) *plan {
	p := newPlan()
	s.dropOrphans(p)
	if timed {
		// Time-driven checks walk every session: once a tick.
		s.lostAgents(p, now, sil)
		s.checkRestarted(p, now)
		s.pendingTimeouts(now)
	}
	for _, sess := range s.toTerminate() {
		s.terminate(p, sess)
	}
	if timed {
		s.deadlines(p, now)
	}
	return p
}

func (s *Service) group(name string) GroupPolicy {
	if g, ok := s.cfg.Groups[name]; ok {
		return g
	}
	return s.cfg.Default
}

// toTerminate lists sessions with a terminate request not yet acted on.
func (s *Service) toTerminate() []*session {
	if len(s.st.terminating) == 0 {
		return nil
	}
	out := make([]*session, 0, len(s.st.terminating))
	for sess := range s.st.terminating {
		out = append(out, sess)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].enqSeq < out[j].enqSeq })
	return out
}

// dropOrphans orders the agents of late placements of final sessions to
// drop them.
func (s *Service) dropOrphans(p *plan) {
	if len(s.st.orphans) == 0 {
		return
	}
	list := make([]*order, 0, len(s.st.orphans))
	for _, o := range s.st.orphans {
		ev := &events.Event{V: events.Version, ID: "orphan-" + o.sid + "-" + o.agentID, Name: events.EventCancelled, Time: s.st.now().UTC(),
			AccessKey: o.ak, SessionID: o.sid, KernelID: o.kid, AgentID: o.agentID, Reason: events.ReasonKilled,
			Message: "placed after it ended"}
		list = append(list, &order{ev: ev, done: func() { s.st.orphans = s.st.orphans[1:] }})
	}
	p.orders = append(p.orders, list)
}

// silence is what probeAgents read of the agents silent past
// AgentTimeout: which are alive after all, and the one whose heartbeat
// could not be read (nil when all could).
type silence struct {
	alive      map[*agent]bool
	unreadable *agent
}

// silent reports whether sess holds capacity on an agent silent past
// AgentTimeout, and that agent.
func (s *Service) silent(sess *session, now time.Time) (*agent, bool) {
	if !sess.status.HoldsCapacity() || sess.agentID == "" {
		return nil, false
	}
	a := s.st.agents[sess.agentID]
	if a == nil || now.Sub(a.seen) <= s.cfg.AgentTimeout || now.Sub(s.storageFailed) <= s.cfg.AgentTimeout ||
		now.Sub(s.storageBack) <= s.cfg.AgentTimeout {
		return nil, false
	}
	return a, true
}

// probeAgents does, on a tick, the reads lostAgents decides on; nil means
// nobody may be lost this tick. Silent means silent in the bucket too
// (stillBeating), not only in the watch; while the bucket does not
// answer, nobody is lost.
//
// Silent means silent while the bucket could store, too: before anyone is
// lost, the scheduler writes to the bucket itself (storageWritable). A
// write that fails (the server's disk full) says the heartbeats could not
// be stored either: nobody is lost, and once writes work again every agent
// has AgentTimeout from then to be heard.
//
// Only the decision loop writes the state, and this is it: it reads the
// state without s.mu, and takes s.mu only to write.
func (s *Service) probeAgents(ctx context.Context, now time.Time) *silence {
	if !s.agentsReadable(ctx, now) {
		return nil // silence.go: no evidence while the bucket cannot be read
	}
	var silentAgents []*agent
	seen := map[*agent]bool{}
	for _, sess := range s.sorted() {
		if a, ok := s.silent(sess, now); ok && !seen[a] {
			seen[a] = true
			silentAgents = append(silentAgents, a)
		}
	}
	sil := &silence{alive: map[*agent]bool{}}
	if len(silentAgents) == 0 {
		return sil
	}
	if err := s.storageWritable(ctx); err != nil {
		s.storageFailed = now
		a := silentAgents[0]
		s.log.Warn().Err(err).Str("agent_id", a.id).Dur("silent", now.Sub(a.seen)).
			Msg("agents_not_judged: the agents bucket cannot store, so a silent agent may be beating")
		return nil
	}
	if s.storageBack.Before(s.storageFailed) {
		// The first write that works after failures: from now, every agent
		// has AgentTimeout to be heard (its heartbeats were refused until
		// now, and its next one may not be stored yet).
		s.storageBack = now
		s.log.Info().Msg("agents_bucket_stores_again: agent silence measured from now")
		return nil
	}
	for _, a := range silentAgents {
		ok, err := s.stillBeating(ctx, a, now)
		if err != nil {
			s.log.Warn().Err(err).Str("agent_id", a.id).Msg("agent_heartbeat_unreadable")
			sil.unreadable = a
			s.readsFailed(now)
			break
		}
		sil.alive[a] = ok
	}
	return sil
}

// lostAgents ends the sessions of agents silent past AgentTimeout that
// probeAgents found silent in the bucket too: ERROR, then TERMINATED,
// reason agent-lost, which releases their capacity; then a kill order on
// the agent's own work subject, which it finds if it comes back. The
// sessions after the first on an agent whose heartbeat could not be read
// wait for the next tick.
func (s *Service) lostAgents(p *plan, now time.Time, sil *silence) {
	if sil == nil {
		return
	}
	for _, sess := range s.sorted() {
		a, ok := s.silent(sess, now)
		if !ok {
			continue
		}
		if a == sil.unreadable {
			return
		}
		if sil.alive[a] {
			continue
		}
		a.lost = true
		msg := fmt.Sprintf("agent %s silent for %s", sess.agentID, now.Sub(a.seen).Truncate(time.Millisecond))
		s.forceEnd(p, sess, events.ReasonAgentLost, msg)
	}
}

// probeKey is the key the scheduler writes in the agents' bucket to learn
// whether the bucket can store; the agents' watch skips it. A failed
// probe holds the next one back for AgentTimeout (lostAgents).
const probeKey = events.AgentsProbeKey

// storageWritable writes the probe key: an error says the bucket, and so
// the agents' heartbeats, cannot be stored now.
func (s *Service) storageWritable(ctx context.Context) error {
	if s.agents == nil {
		return nil
	}
	pctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	_, err := s.agents.Put(pctx, probeKey, []byte(s.cfg.InstanceID))
	return err
}

// stillBeating reads the heartbeat of agent a, silent for AgentTimeout as
// far as the agents' watch tells, straight from the bucket. A revision
// newer than the last the watch gave means the agent beat meanwhile and
// the watch is behind (a consumer that stopped delivering for a while):
// the heartbeat is applied and a is alive. An error says the bucket did
// not answer.
func (s *Service) stillBeating(ctx context.Context, a *agent, now time.Time) (bool, error) {
	if s.agents == nil {
		return false, nil
	}
	gctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	e, err := s.agents.Get(gctx, a.id)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted):
		return false, nil
	case err != nil:
		return false, err
	case e.Revision() <= a.rev:
		return false, nil
	}
	info, ok := decodeHeartbeat(e)
	if !ok {
		return false, nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.st.heartbeat(info, now); err != nil {
		return false, nil
	}
	a.rev = e.Revision()
	s.log.Warn().Str("agent_id", a.id).Msg("agent_watch_behind: heartbeat read from the bucket")
	return true, nil
}

// forceEnd plans to move a session to ERROR (when it is not), then
// TERMINATED, and to order its agent to kill what it may still run for it.
func (s *Service) forceEnd(p *plan, sess *session, reason events.Reason, msg string) {
	agentID := sess.agentID
	var evs []*events.Event
	if sess.status != events.StatusError {
		ev := s.event(sess, events.EventError)
		// The placement's agent id: an error or end of a placed session
		// without it is refused as forged (events.NotFromPlacedAgent).
		ev.AgentID, ev.Reason, ev.Message = agentID, reason, msg
		evs = append(evs, ev)
	}
	ev := s.event(sess, events.EventTerminated)
	ev.AgentID, ev.Reason, ev.Message = agentID, reason, msg
	evs = append(evs, ev)
	d := p.decide(sess, evs...)
	if d == nil {
		return
	}
	if agentID != "" {
		d.kill = s.event(sess, events.EventCancelled)
		d.kill.ID = "kill-" + sess.spec.ID + "-" + agentID
		d.kill.AgentID, d.kill.Reason, d.kill.Message = agentID, reason, "kill order: "+msg
	}
	d.done = func(d *decision) {
		s.log.Warn().Str("session_id", sess.spec.ID).Str("agent_id", agentID).Str("reason", string(reason)).Msg(msg)
		if d.kill != nil && !d.killStored {
			// The session is final: its late placement is found again as
			// an orphan only if the agent re-reports; record it now.
			s.st.orphans = append(s.st.orphans, orphan{ak: sess.spec.AccessKey, sid: sess.spec.ID, kid: sess.spec.MainKernelID, agentID: agentID})
		}
	}
}

// deadlines plans to move sessions stuck in a non-final status on.
func (s *Service) deadlines(p *plan, now time.Time) {
	for _, sess := range s.sorted() {
		d, ok := s.cfg.Deadlines[sess.status]
		if !ok || now.Sub(sess.since) <= d || p.decided[sess] {
			continue
		}
		msg := fmt.Sprintf("%s for more than %s", sess.status, d)
		switch sess.status {
		case events.StatusError:
			if sess.agentID == "" {
				ev := s.event(sess, events.EventTerminated)
				ev.Reason, ev.Message = events.ReasonStatusTimeout, msg
				p.decide(sess, ev)
				continue
			}
			ev := s.event(sess, events.EventTerminating)
			ev.AgentID, ev.Reason, ev.Message = sess.agentID, events.ReasonStatusTimeout, msg
			p.decide(sess, ev)
		case events.StatusTerminating:
			if sess.termTries >= s.cfg.TerminateRetries {
				s.forceEnd(p, sess, events.ReasonStatusTimeout, msg+", forced")
				continue
			}
			ev := s.event(sess, events.EventTerminating)
			ev.AgentID, ev.Reason, ev.Message = sess.agentID, events.ReasonStatusTimeout, msg+", ordered again"
			if dec := p.decide(sess, ev); dec != nil {
				dec.done = func(*decision) {
					sess.termTries++
					sess.since = now
				}
			}
		default:
			ev := s.event(sess, events.EventError)
			ev.AgentID, ev.Reason, ev.Message = sess.agentID, events.ReasonStatusTimeout, msg
			p.decide(sess, ev)
		}
	}
}

// pendingTimeouts marks for cancellation what waited too long, and for
// termination the batch sessions past their batch timeout.
func (s *Service) pendingTimeouts(now time.Time) {
	for _, sess := range s.st.sessions {
		if sp := sess.spec; sp.Type == events.TypeBatch && sp.BatchTimeout > 0 && sess.status == events.StatusRunning &&
			sess.terminateReason == "" && now.Sub(sess.since) > sp.BatchTimeout {
			s.st.setTerminate(sess, events.ReasonBatchTimeout)
		}
	}
	for _, sess := range s.st.pending {
		if g := s.group(sess.spec.ScalingGroup); g.PendingTimeout > 0 && sess.terminateReason == "" && now.Sub(sess.since) > g.PendingTimeout {
			s.st.setTerminate(sess, events.ReasonPendingTimeout)
		}
	}
}

// sorted lists the live sessions in enqueue order (deterministic decisions).
func (s *Service) sorted() []*session {
	out := make([]*session, 0, len(s.st.sessions))
	for _, sess := range s.st.sessions {
		if sess.status != events.StatusPending {
			out = append(out, sess)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].enqSeq < out[j].enqSeq })
	return out
}

func (s *Service) terminate(p *plan, sess *session) {
	ev := s.event(sess, events.EventTerminating)
	ev.Reason = sess.terminateReason
	switch {
	case sess.status == events.StatusPending:
		ev.Name = events.EventCancelled
	case sess.agentID == "":
		ev.Name = events.EventTerminated // an ERROR that never reached an agent
	case sess.status.HoldsCapacity() && !events.CanTransition(sess.status, events.StatusTerminating):
		ev.Name = events.EventCancelled
		ev.AgentID = sess.agentID
	default:
		ev.AgentID = sess.agentID
	}
	if d := p.decide(sess, ev); d != nil {
		d.done = func(*decision) { s.st.setTerminate(sess, "") }
	}
}

// planPlacements plans one placement round over every scaling group
// (the caller holds s.mu): its pending-info events and its placements,
// in batches of at most maxPlacementsPerBatch.
func (s *Service) planPlacements(now time.Time) *plan {
	p := newPlan()
	places := s.place(p, now)
	for len(places) > 0 {
		n := min(len(places), maxPlacementsPerBatch)
		p.batches = append(p.batches, s.batch(p, places[:n]))
		places = places[n:]
	}
	return p
}

// place decides the round's placements over every scaling group,
// tentatively, and adds the round's pending-info events to p.
func (s *Service) place(p *plan, now time.Time) []tentative {
	queues := s.st.queues()
	if len(queues) == 0 {
		return nil
	}
	names := make([]string, 0, len(queues))
	for g := range queues {
		names = append(names, g)
	}
	sort.Strings(names)
	placed := map[string]int{}
	var out []tentative
	for _, g := range names {
		r := s.st.newRound(g, s.group(g), now, s.cfg.AgentTimeout, placed)
		s.placeGroup(p, r, queues[g])
		out = append(out, r.batch...)
		if r.held {
			// What it held back goes, if it fits, next round: now, not at
			// the next tick or event.
			s.st.dirty = true
			select {
			case s.poke <- struct{}{}:
			default:
			}
		}
	}
	return out
}

// Pending-info events are rate limited, so that a queue of many thousands
// whose reason changes (an agent joins, a slot runs short) informs over a
// few seconds and does not flood the log while placements go on: at most
// infoPerSecond on average, infoBurst at once.
const (
	infoPerSecond = 500
	infoBurst     = 1000
)

// infoTokens is how many pending-info events the round starting at now
// may publish: the tokens left, refilled for the time since the last
// round.
func (st *state) infoTokens(now time.Time) int {
	if st.infoAt.IsZero() {
		st.infoLeft = infoBurst
	} else {
		st.infoLeft -= st.infoSpent
		if d := now.Sub(st.infoAt); d > 0 {
			st.infoLeft += int(min(d.Seconds()*infoPerSecond, infoBurst))
		}
		st.infoLeft = min(max(st.infoLeft, 0), infoBurst)
	}
	st.infoAt, st.infoSpent = now, 0
	return st.infoLeft
}

// maxPlacementsPerBatch bounds the publishes one commit has in flight
// (placements plus one ledger entry per agent), well under the client's
// limit of pending asynchronous publishes.
const maxPlacementsPerBatch = 400

// placeGroup decides what it can of one group's queue, tentatively.
func (s *Service) placeGroup(p *plan, r *round, q []*session) {
	sortQueue(q, r.gp.Policy)
	// Predicates first: what may not go yet says why.
	ready := q[:0]
	for _, sess := range q {
		if reason, msg := r.predicates(sess); reason != "" {
			s.info(p, sess, reason, msg)
			continue
		}
		ready = append(ready, sess)
	}
	try := func(sess *session) (placed bool) {
		if msg := r.overLimit(sess); msg != "" {
			s.info(p, sess, events.ReasonConcurrencyLimit, msg)
			return false
		}
		a := r.pick(sess)
		if a == nil {
			return false
		}
		r.add(a, sess)
		r.batch = append(r.batch, tentative{sess: sess, agent: a})
		r.st.rr[r.group] = a.info.ID
		r.placed[sess.spec.AccessKey]++
		return true
	}
	switch r.gp.Policy {
	case DRF:
		s.placeDRF(p, r, ready, try)
	case LIFO:
		for _, sess := range ready {
			if !try(sess) && r.overLimit(sess) == "" {
				s.info(p, sess, events.ReasonNoAgent, r.lastWhy)
			}
		}
	default: // FIFO
		var blocker *session
		for _, sess := range ready {
			if blocker != nil && !sess.waited {
				// Held back behind the head this round, once: from the
				// next it goes when it fits.
				sess.waited = true
				r.held = true
				s.info(p, sess, events.ReasonQueueBlocked, "behind "+blocker.spec.ID)
				continue
			}
			if try(sess) || r.overLimit(sess) != "" {
				continue // a keypair limit blocks no one else
			}
			s.info(p, sess, events.ReasonNoAgent, r.lastWhy)
			if blocker == nil && sess.retries < r.gp.SkipAfter {
				sess.retries++
				blocker = sess
			}
		}
	}
}

// placeDRF places, within each priority, the head of the access key with
// the lowest dominant share of the group's capacity first.
func (s *Service) placeDRF(p *plan, r *round, q []*session, try func(*session) bool) {
	total := slots.Set{}
	for _, a := range r.agents {
		if !r.live(a) {
			continue
		}
		if t, err := total.Add(a.capacity); err == nil {
			total = t
		}
	}
	// What each access key holds in the group, plus (new sets, added
	// below) what this round places.
	used := maps.Clone(s.st.held[r.group])
	if used == nil {
		used = map[string]slots.Set{}
	}
	for len(q) > 0 {
		prio := q[0].priority
		n := 0
		for n < len(q) && q[n].priority == prio {
			n++
		}
		tier := q[:n]
		q = q[n:]
		byKey := map[string][]*session{}
		var keys []string
		for _, sess := range tier {
			ak := sess.spec.AccessKey
			if byKey[ak] == nil {
				keys = append(keys, ak)
			}
			byKey[ak] = append(byKey[ak], sess)
		}
		for {
			best := ""
			var bestShare float64
			for _, ak := range keys {
				if len(byKey[ak]) == 0 {
					continue
				}
				sh := dominantShare(used[ak], total)
				if best == "" || sh < bestShare || sh == bestShare && byKey[ak][0].enqSeq < byKey[best][0].enqSeq {
					best, bestShare = ak, sh
				}
			}
			if best == "" {
				break
			}
			sess := byKey[best][0]
			byKey[best] = byKey[best][1:]
			if !try(sess) {
				if r.overLimit(sess) == "" {
					s.info(p, sess, events.ReasonNoAgent, r.lastWhy)
				}
				continue
			}
			u := used[best]
			if u == nil {
				u = slots.Set{}
			}
			if n, err := u.Add(sess.slots); err == nil {
				used[best] = n
			}
		}
	}
}

// info records on the session why it waits, once per distinct reason (see
// infoKey), as a session_pending_info event that the registry shows as
// status_info.
func (s *Service) info(p *plan, sess *session, reason events.Reason, msg string) {
	if reason == sess.infoReason && msg == sess.infoMsg {
		return // what it says already, word for word: the common case
	}
	if s.infoBudget <= 0 {
		return // left for a later round
	}
	if reason != s.keyReason || msg != s.keyMsg {
		// Sessions that wait for the same reason come in a row.
		s.keyReason, s.keyMsg, s.key = reason, msg, infoKey(reason, msg)
	}
	text := s.key
	if sess.info == text {
		return // the same reason, other figures
	}
	s.infoBudget--
	s.st.infoSpent++
	// Said once sent; a publish that fails clears it (applyPlan).
	sess.info, sess.infoReason, sess.infoMsg = text, reason, msg
	ev := s.event(sess, events.EventPendingInfo)
	ev.Reason, ev.Message = reason, msg
	p.infos = append(p.infos, &pendingInfo{sess: sess, ev: ev})
}

// A commit publishes a round's placements in two steps, each a set of
// asynchronous publishes whose acknowledgements it waits for:
//
//  1. per agent touched, one agent_ledger entry on the agent's ledger
//     subject listing the round's reservations there, conditioned on the
//     agent's last ledger sequence as this scheduler knows it;
//  2. for each placement on an agent whose ledger entry was stored, the
//     session_scheduled event, conditioned on the session's last sequence
//     (no session placed twice, none placed after it was cancelled).
//
// Why no agent is ever over-committed (DESIGN.md section 7, invariant 1),
// with any number of schedulers deciding at once and any crash between
// the steps: every placement on agent X follows a stored ledger entry for
// X that reserves it, and that entry was conditioned on the last ledger
// sequence the deciding scheduler had seen, so when it was stored the
// scheduler had seen every earlier entry of X's ledger. Order X's stored
// entries E1, E2, ...; at any instant t let Ek be the last one before t.
// A session holding capacity on X at t was placed through some Ej, j <= k.
// For j = k, Ek's author counted it as one of its own reservations. For
// j < k, Ek's author had seen Ej, and counted the session either as placed
// on X (its placement was in the author's view) or as a live reservation
// on X: a reservation is dropped from the count only when the author's
// view shows the session placed (anywhere: once only), ended, or moved
// past the sequence the placement is conditioned on, and then that
// placement can never be stored (see reservation). The author counted
// each session once (a reservation becoming a placement replaces it, see
// round.add) and checked that the sum fits X's capacity. So at t what X
// holds is at most what Ek's author counted, which fits.
//
// A refused ledger entry (a stale view of X's ledger) places nothing on X
// this round; it is taken again once the log has caught up. A refused
// placement (the session moved meanwhile) is not placed; its reservation
// is void as soon as the move reaches this scheduler. A reservation whose
// placement was never published (a crash between the steps) counts until
// its session moves, is placed or ends; the next leader places the
// session counting that reservation as its own (round.pick).
//
// batch builds one such commit of places (the caller holds s.mu); the
// submitter publishes it (jsSubmitter.commit) and applyPlan applies what
// was stored.
func (s *Service) batch(p *plan, places []tentative) *batch {
	b := &batch{}
	byAgent := map[*agent]*ledgerEntry{}
	now := s.st.now().UTC()
	for _, t := range places {
		le := byAgent[t.agent]
		if le == nil {
			id := t.agent.info.ID
			le = &ledgerEntry{agent: t.agent, ev: &events.Event{V: events.Version, ID: events.NewID(), Name: events.EventAgentLedger, Time: now,
				AccessKey: events.LedgerOwner, SessionID: id, AgentID: id}}
			byAgent[t.agent] = le
			b.ledgers = append(b.ledgers, le)
			if p.ledgerSeq == nil {
				p.ledgerSeq = map[string]uint64{}
			}
			if _, ok := p.ledgerSeq[id]; !ok {
				p.ledgerSeq[id] = s.st.ledger[id]
			}
		}
		sess, a := t.sess, t.agent
		sp := sess.spec
		le.ev.Reservations = append(le.ev.Reservations, events.Reservation{
			AccessKey: sp.AccessKey, SessionID: sp.ID, Slots: sp.Slots, Seq: sess.lastSeq})
		ev := s.event(sess, events.EventScheduled)
		ev.AgentID, ev.AgentEpoch, ev.Session = a.info.ID, a.info.Epoch, sp
		filter, _ := events.SessionFilter(sp.AccessKey, sp.ID)
		le.places = append(le.places, &placement{sess: sess, ev: ev, filter: filter, expect: sess.lastSeq})
	}
	return b
}

func (s *Service) event(sess *session, name events.Name) *events.Event {
	return &events.Event{
		V: events.Version, ID: events.NewID(), Name: name, Time: s.st.now().UTC(),
		AccessKey: sess.spec.AccessKey, SessionID: sess.spec.ID, KernelID: sess.spec.MainKernelID,
	}
}
