package scheduler

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"sort"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"

	"github.com/bai-sh/bai/pkg/events"
	"github.com/bai-sh/bai/pkg/events/streams"
	"github.com/bai-sh/bai/pkg/slots"
)

// decide acts on the current state, as the leader: orphan placements,
// lost agents, terminate requests, deadlines, then placements. The
// time-driven checks run on ticks (timed) only.
func (s *Service) decide(ctx context.Context, timed bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	s.infoBudget = s.st.infoTokens(now)
	s.dropOrphans(ctx)
	if timed {
		// Time-driven checks walk every session: once a tick.
		s.lostAgents(ctx, now)
		s.checkRestarted(ctx, now)
		s.pendingTimeouts(now)
	}
	for _, sess := range s.toTerminate() {
		s.terminate(ctx, sess)
	}
	if timed {
		s.deadlines(ctx, now)
	}
	if s.st.dirty || timed {
		s.st.dirty = false
		s.placeAll(ctx, now)
	}
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
func (s *Service) dropOrphans(ctx context.Context) {
	for len(s.st.orphans) > 0 {
		o := s.st.orphans[0]
		ev := &events.Event{V: events.Version, ID: "orphan-" + o.sid + "-" + o.agentID, Name: events.EventCancelled, Time: time.Now().UTC(),
			AccessKey: o.ak, SessionID: o.sid, KernelID: o.kid, AgentID: o.agentID, Reason: events.ReasonKilled,
			Message: "placed after it ended"}
		if _, err := s.publishEvent(ctx, ev, 0, ""); err != nil {
			return
		}
		s.st.orphans = s.st.orphans[1:]
	}
}

// lostAgents ends the sessions of agents silent past AgentTimeout: ERROR,
// then TERMINATED, reason agent-lost, which releases their capacity; then
// a kill order on the agent's own work subject, which it finds if it
// comes back. Silent means silent in the bucket too (stillBeating), not
// only in the watch; while the bucket does not answer, nobody is lost.
//
// Silent means silent while the bucket could store, too: before anyone is
// lost, the scheduler writes to the bucket itself (storageWritable). A
// write that fails (the server's disk full) says the heartbeats could not
// be stored either: nobody is lost, and once writes work again every agent
// has AgentTimeout from then to be heard.
func (s *Service) lostAgents(ctx context.Context, now time.Time) {
	if !s.agentsReadable(ctx, now) {
		return // silence.go: no evidence while the bucket cannot be read
	}
	alive := map[*agent]bool{}
	unreadable := false // the bucket did not answer: nobody is lost this tick
	probed := false
	for _, sess := range s.sorted() {
		if !sess.status.HoldsCapacity() || sess.agentID == "" {
			continue
		}
		a := s.st.agents[sess.agentID]
		if a == nil || now.Sub(a.seen) <= s.cfg.AgentTimeout || now.Sub(s.storageFailed) <= s.cfg.AgentTimeout {
			continue
		}
		if !probed {
			probed = true
			if err := s.storageWritable(ctx); err != nil {
				s.storageFailed = now
				s.log.Warn().Err(err).Str("agent_id", a.id).Dur("silent", now.Sub(a.seen)).
					Msg("agents_not_judged: the agents bucket cannot store, so a silent agent may be beating")
				return
			}
		}
		ok, checked := alive[a]
		if !checked && !unreadable {
			var err error
			ok, err = s.stillBeating(ctx, a, now)
			if err != nil {
				s.log.Warn().Err(err).Str("agent_id", a.id).Msg("agent_heartbeat_unreadable")
				unreadable = true
				s.readsFailed(now)
			}
			alive[a] = ok
		}
		if ok || unreadable {
			continue
		}
		a.lost = true
		msg := fmt.Sprintf("agent %s silent for %s", sess.agentID, now.Sub(a.seen).Truncate(time.Millisecond))
		s.forceEnd(ctx, sess, events.ReasonAgentLost, msg)
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
	if err := s.st.heartbeat(info, now); err != nil {
		return false, nil
	}
	a.rev = e.Revision()
	s.log.Warn().Str("agent_id", a.id).Msg("agent_watch_behind: heartbeat read from the bucket")
	return true, nil
}

// forceEnd moves a session to ERROR (when it is not), then TERMINATED,
// and orders its agent to kill what it may still run for it.
func (s *Service) forceEnd(ctx context.Context, sess *session, reason events.Reason, msg string) {
	agentID := sess.agentID
	if sess.status != events.StatusError {
		ev := s.event(sess, events.EventError)
		// The placement's agent id: an error or end of a placed session
		// without it is refused as forged (events.NotFromPlacedAgent).
		ev.AgentID, ev.Reason, ev.Message = agentID, reason, msg
		if !s.decision(ctx, sess, ev) {
			return
		}
	}
	ev := s.event(sess, events.EventTerminated)
	ev.AgentID, ev.Reason, ev.Message = agentID, reason, msg
	if !s.decision(ctx, sess, ev) {
		return
	}
	s.log.Warn().Str("session_id", sess.spec.ID).Str("agent_id", agentID).Str("reason", string(reason)).Msg(msg)
	if agentID == "" {
		return
	}
	kill := s.event(sess, events.EventCancelled)
	kill.ID = "kill-" + sess.spec.ID + "-" + agentID
	kill.AgentID, kill.Reason, kill.Message = agentID, reason, "kill order: "+msg
	if _, err := s.publishEvent(ctx, kill, 0, ""); err != nil {
		// The session is final: its late placement is found again as an
		// orphan only if the agent re-reports; record it now.
		s.st.orphans = append(s.st.orphans, orphan{ak: sess.spec.AccessKey, sid: sess.spec.ID, kid: sess.spec.MainKernelID, agentID: agentID})
	}
}

// deadlines moves sessions stuck in a non-final status on.
func (s *Service) deadlines(ctx context.Context, now time.Time) {
	for _, sess := range s.sorted() {
		d, ok := s.cfg.Deadlines[sess.status]
		if !ok || now.Sub(sess.since) <= d {
			continue
		}
		msg := fmt.Sprintf("%s for more than %s", sess.status, d)
		switch sess.status {
		case events.StatusError:
			if sess.agentID == "" {
				ev := s.event(sess, events.EventTerminated)
				ev.Reason, ev.Message = events.ReasonStatusTimeout, msg
				s.decision(ctx, sess, ev)
				continue
			}
			ev := s.event(sess, events.EventTerminating)
			ev.AgentID, ev.Reason, ev.Message = sess.agentID, events.ReasonStatusTimeout, msg
			s.decision(ctx, sess, ev)
		case events.StatusTerminating:
			if sess.termTries >= s.cfg.TerminateRetries {
				s.forceEnd(ctx, sess, events.ReasonStatusTimeout, msg+", forced")
				continue
			}
			ev := s.event(sess, events.EventTerminating)
			ev.AgentID, ev.Reason, ev.Message = sess.agentID, events.ReasonStatusTimeout, msg+", ordered again"
			if s.decision(ctx, sess, ev) {
				sess.termTries++
				sess.since = now
			}
		default:
			ev := s.event(sess, events.EventError)
			ev.AgentID, ev.Reason, ev.Message = sess.agentID, events.ReasonStatusTimeout, msg
			s.decision(ctx, sess, ev)
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

func (s *Service) terminate(ctx context.Context, sess *session) {
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
	if s.decision(ctx, sess, ev) {
		s.st.setTerminate(sess, "")
	}
}

// placeAll runs one placement round over every scaling group, then
// commits its placements.
func (s *Service) placeAll(ctx context.Context, now time.Time) {
	batch := s.plan(ctx, now)
	for len(batch) > 0 {
		n := min(len(batch), maxPlacementsPerBatch)
		if !s.commit(ctx, batch[:n]) {
			return
		}
		batch = batch[n:]
	}
}

// plan decides the round's placements over every scaling group,
// tentatively.
func (s *Service) plan(ctx context.Context, now time.Time) []tentative {
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
	var batch []tentative
	for _, g := range names {
		r := s.st.newRound(g, s.group(g), now, s.cfg.AgentTimeout, placed)
		s.placeGroup(ctx, r, queues[g])
		batch = append(batch, r.batch...)
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
	return batch
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
func (s *Service) placeGroup(ctx context.Context, r *round, q []*session) bool {
	sortQueue(q, r.gp.Policy)
	// Predicates first: what may not go yet says why.
	ready := q[:0]
	for _, sess := range q {
		if reason, msg := r.predicates(sess); reason != "" {
			s.info(ctx, sess, reason, msg)
			continue
		}
		ready = append(ready, sess)
	}
	try := func(sess *session) (placed, ok bool) {
		if msg := r.overLimit(sess); msg != "" {
			s.info(ctx, sess, events.ReasonConcurrencyLimit, msg)
			return false, true
		}
		a := r.pick(sess)
		if a == nil {
			return false, true
		}
		r.add(a, sess)
		r.batch = append(r.batch, tentative{sess: sess, agent: a})
		r.st.rr[r.group] = a.info.ID
		r.placed[sess.spec.AccessKey]++
		return true, true
	}
	switch r.gp.Policy {
	case DRF:
		return s.placeDRF(ctx, r, ready, try)
	case LIFO:
		for _, sess := range ready {
			placed, ok := try(sess)
			if !ok {
				return false
			}
			if !placed && r.overLimit(sess) == "" {
				s.info(ctx, sess, events.ReasonNoAgent, r.lastWhy)
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
				s.info(ctx, sess, events.ReasonQueueBlocked, "behind "+blocker.spec.ID)
				continue
			}
			placed, ok := try(sess)
			if !ok {
				return false
			}
			if placed || r.overLimit(sess) != "" {
				continue // a keypair limit blocks no one else
			}
			s.info(ctx, sess, events.ReasonNoAgent, r.lastWhy)
			if blocker == nil && sess.retries < r.gp.SkipAfter {
				sess.retries++
				blocker = sess
			}
		}
	}
	return true
}

// placeDRF places, within each priority, the head of the access key with
// the lowest dominant share of the group's capacity first.
func (s *Service) placeDRF(ctx context.Context, r *round, q []*session, try func(*session) (bool, bool)) bool {
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
			placed, ok := try(sess)
			if !ok {
				return false
			}
			if !placed {
				if r.overLimit(sess) == "" {
					s.info(ctx, sess, events.ReasonNoAgent, r.lastWhy)
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
	return true
}

// info records on the session why it waits, once per distinct reason (see
// infoKey), as a session_pending_info event that the registry shows as
// status_info.
func (s *Service) info(ctx context.Context, sess *session, reason events.Reason, msg string) {
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
	sess.info, sess.infoReason, sess.infoMsg = text, reason, msg
	ev := s.event(sess, events.EventPendingInfo)
	ev.Reason, ev.Message = reason, msg
	subj, err := events.EventSubject(ev)
	if err != nil {
		return
	}
	data, err := events.Marshal(ev)
	if err != nil {
		return
	}
	// Asynchronous: it only informs; the log's echo updates lastSeq.
	if _, err := s.js.PublishAsync(subj, data, jetstream.WithMsgID(ev.ID)); err != nil {
		sess.info, sess.infoReason, sess.infoMsg = "", "", ""
	}
}

// commit publishes a round's placements in two steps, each a set of
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
func (s *Service) commit(ctx context.Context, batch []tentative) bool {
	type agentBatch struct {
		ledger *events.Event
		items  []tentative
		ack    jetstream.PubAckFuture
	}
	byAgent := map[*agent]*agentBatch{}
	var order []*agentBatch
	now := time.Now().UTC()
	for _, t := range batch {
		ab := byAgent[t.agent]
		if ab == nil {
			id := t.agent.info.ID
			ab = &agentBatch{ledger: &events.Event{V: events.Version, ID: nuid.Next(), Name: events.EventAgentLedger, Time: now,
				AccessKey: events.LedgerOwner, SessionID: id, AgentID: id}}
			byAgent[t.agent] = ab
			order = append(order, ab)
		}
		sp := t.sess.spec
		ab.ledger.Reservations = append(ab.ledger.Reservations, events.Reservation{
			AccessKey: sp.AccessKey, SessionID: sp.ID, Slots: sp.Slots, Seq: t.sess.lastSeq})
		ab.items = append(ab.items, t)
	}
	// Step 1: the ledger entries.
	for _, ab := range order {
		ab.ack = s.publishAsync(ab.ledger, jetstream.WithExpectLastSequencePerSubject(s.st.ledger[ab.ledger.AgentID]))
	}
	ok := true
	var places []*placement
	wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	for _, ab := range order {
		seq, err := s.waitAck(wctx, ab.ack)
		if err != nil {
			s.refused.Add(1)
			s.st.dirty = true // retried once the log has caught up
			ok = false
			continue
		}
		s.st.applyMine(ab.ledger, seq)
		for _, t := range ab.items {
			places = append(places, &placement{t: t})
		}
	}
	// Step 2: the placements on the agents whose entries were stored.
	for _, p := range places {
		sess, a := p.t.sess, p.t.agent
		p.ev = s.event(sess, events.EventScheduled)
		p.ev.AgentID, p.ev.AgentEpoch, p.ev.Session = a.info.ID, a.info.Epoch, sess.spec
		filter, _ := events.SessionFilter(sess.spec.AccessKey, sess.spec.ID)
		p.ack = s.publishAsync(p.ev, jetstream.WithExpectLastSequenceForSubject(sess.lastSeq, filter))
	}
	n := 0
	wctx, cancel = context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	for _, p := range places {
		seq, err := s.waitAck(wctx, p.ack)
		if err != nil {
			s.refused.Add(1)
			continue // its reservation is void once the move reaches us
		}
		s.metrics.placed(p.t.sess.spec.ScalingGroup, p.ev.Time.Sub(p.t.sess.since))
		s.st.applyMine(p.ev, seq)
		n++
	}
	s.placed.Add(int64(n))
	return ok
}

// placement is one session_scheduled of a commit and its acknowledgement.
type placement struct {
	t   tentative
	ev  *events.Event
	ack jetstream.PubAckFuture
}

// publishAsync publishes ev with its id as the message id and opts, not
// waiting for the acknowledgement (waitAck). A nil future means it could
// not be sent.
func (s *Service) publishAsync(ev *events.Event, opts ...jetstream.PublishOpt) jetstream.PubAckFuture {
	subj, err := events.EventSubject(ev)
	if err != nil {
		s.log.Error().Err(err).Msg("bad_decision_subject")
		return nil
	}
	data, err := events.Marshal(ev)
	if err != nil {
		return nil
	}
	f, err := s.js.PublishAsync(subj, data, append(opts, jetstream.WithMsgID(ev.ID))...)
	if err != nil {
		s.log.Warn().Err(err).Str("event", string(ev.Name)).Msg("placement_publish_failed")
		return nil
	}
	return f
}

// errNotSent is the outcome of a publish that never left.
var errNotSent = errors.New("not sent")

// waitAck waits for f's acknowledgement until ctx is done and returns
// the stored sequence. An error other than a refusal leaves the outcome
// unknown: what was stored after all reaches the state through the log.
func (s *Service) waitAck(ctx context.Context, f jetstream.PubAckFuture) (uint64, error) {
	if f == nil {
		return 0, errNotSent
	}
	select {
	case ack := <-f.Ok():
		return ack.Sequence, nil
	case err := <-f.Err():
		if !streams.IsWrongLastSequence(err) {
			s.log.Warn().Err(err).Msg("placement_publish_failed")
		}
		return 0, err
	case <-ctx.Done():
		s.log.Warn().Err(ctx.Err()).Msg("placement_ack_timeout")
		return 0, ctx.Err()
	}
}

func (s *Service) event(sess *session, name events.Name) *events.Event {
	return &events.Event{
		V: events.Version, ID: nuid.Next(), Name: name, Time: time.Now().UTC(),
		AccessKey: sess.spec.AccessKey, SessionID: sess.spec.ID, KernelID: sess.spec.MainKernelID,
	}
}

// decision publishes a decision about one session with the session's last
// known sequence as a precondition, and applies it. A refusal means the
// view was stale: the newer event is on its way through the consumer and
// the decision is taken again then.
func (s *Service) decision(ctx context.Context, sess *session, ev *events.Event) bool {
	filter, _ := events.SessionFilter(sess.spec.AccessKey, sess.spec.ID)
	seq, err := s.publishEvent(ctx, ev, sess.lastSeq, filter)
	if err != nil {
		return false
	}
	s.st.applyMine(ev, seq)
	return true
}

// publishEvent publishes ev with its id as the message id and, when
// filter is set, the precondition that the last message matching filter
// has sequence expect.
func (s *Service) publishEvent(ctx context.Context, ev *events.Event, expect uint64, filter string) (uint64, error) {
	subj, err := events.EventSubject(ev)
	if err != nil {
		s.log.Error().Err(err).Msg("bad_decision_subject")
		return 0, err
	}
	data, err := events.Marshal(ev)
	if err != nil {
		return 0, err
	}
	opts := []jetstream.PublishOpt{jetstream.WithMsgID(ev.ID)}
	if filter != "" {
		opts = append(opts, jetstream.WithExpectLastSequenceForSubject(expect, filter))
	}
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	ack, err := s.js.Publish(pctx, subj, data, opts...)
	if err != nil {
		if !streams.IsWrongLastSequence(err) {
			s.log.Warn().Err(err).Str("session_id", ev.SessionID).Str("event", string(ev.Name)).Msg("decision_publish_failed")
		}
		return 0, err
	}
	return ack.Sequence, nil
}
