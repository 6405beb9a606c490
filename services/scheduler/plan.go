package scheduler

import (
	"github.com/bai-sh/bai/pkg/events"
)

// A decision step runs in three parts (decide). The planner reads the
// state and returns a plan, holding s.mu but doing no I/O; a submitter
// publishes the plan's events without the lock, so that Snapshot and the
// agents' view never wait for the log, and records in the plan what the
// log stored; applyPlan, holding s.mu again, moves the state by what was
// stored. Only the decision loop writes the state, so nothing changes it
// between planning and applying.

// plan is what one decision step wants published.
type plan struct {
	// orders are lists of unguarded events (a late placement's drop
	// order, a kernel check); each list is published in order until one
	// fails.
	orders [][]*order
	// decisions are guarded decisions about one session each, published
	// in order.
	decisions []*decision
	// infos are pending-info events, published without waiting.
	infos []*pendingInfo
	// batches are placement commits (see Service.commit), submitted in
	// order until one has a ledger entry refused.
	batches []*batch
	// ledgerSeq is, per agent touched by batches, its last ledger
	// sequence: the condition of its next ledger entry. The submitter
	// moves it as the entries are stored.
	ledgerSeq map[string]uint64
	// decided are the sessions a decision of this plan is about: one
	// decision per session and plan (the next one is planned on the
	// state the first left).
	decided map[*session]bool
}

// order is an unguarded event and, once the submitter ran, whether the
// log stored it.
type order struct {
	ev     *events.Event
	stored bool
	// done is applied (under s.mu) once it is stored.
	done func()
}

// decision is a chain of events about one session: each is published on
// the condition that the session's last sequence is the one the event
// before it was stored at (the first: expect), and only once the one
// before was stored. A refusal means the view was stale: the newer event
// is on its way through the consumer and the decision is planned again
// then.
type decision struct {
	sess   *session
	filter string // the session's subject filter
	expect uint64 // the session's last sequence when planned
	evs    []*events.Event
	// kill is an unguarded order published once every one of evs is
	// stored (forceEnd's kill order).
	kill *events.Event
	// Filled in by the submitter: the sequences evs were stored at (a
	// prefix of evs), and whether kill was.
	seqs       []uint64
	killStored bool
	// done is applied (under s.mu) once every one of evs is stored.
	done func(d *decision)
}

// pendingInfo is a session_pending_info event; sent tells whether it left.
type pendingInfo struct {
	sess *session
	ev   *events.Event
	sent bool
}

// batch is one commit of placements (at most maxPlacementsPerBatch).
type batch struct {
	ledgers []*ledgerEntry
	// tried: the submitter submitted it (no batch before it was refused).
	tried bool
}

// ledgerEntry is one agent_ledger event of a batch and the placements
// it reserves.
type ledgerEntry struct {
	ev     *events.Event
	agent  *agent
	places []*placement
	seq    uint64
	stored bool
}

// placement is one session_scheduled event of a batch.
type placement struct {
	sess   *session
	ev     *events.Event
	filter string
	expect uint64
	seq    uint64
	stored bool
}

// newPlan is an empty plan; its maps are made when first written.
func newPlan() *plan { return &plan{} }

// decide adds a guarded decision about sess with evs, unless the plan has
// one about sess already; it returns the decision (nil when it has).
func (p *plan) decide(sess *session, evs ...*events.Event) *decision {
	if p.decided[sess] {
		return nil
	}
	if p.decided == nil {
		p.decided = map[*session]bool{}
	}
	p.decided[sess] = true
	filter, _ := events.SessionFilter(sess.spec.AccessKey, sess.spec.ID)
	d := &decision{sess: sess, filter: filter, expect: sess.lastSeq, evs: evs}
	p.decisions = append(p.decisions, d)
	return d
}

// empty reports whether the plan publishes nothing.
func (p *plan) empty() bool {
	return len(p.orders) == 0 && len(p.decisions) == 0 && len(p.infos) == 0 && len(p.batches) == 0
}

// applyPlan moves the state by what the log stored of p (the caller
// holds s.mu), in the order it was published.
func (s *Service) applyPlan(p *plan) {
	for _, list := range p.orders {
		for _, o := range list {
			if !o.stored {
				break
			}
			if o.done != nil {
				o.done()
			}
		}
	}
	for _, d := range p.decisions {
		for i, seq := range d.seqs {
			s.st.applyMine(d.evs[i], seq)
		}
		if len(d.seqs) == len(d.evs) && d.done != nil {
			d.done(d)
		}
	}
	for _, in := range p.infos {
		if !in.sent {
			in.sess.info, in.sess.infoReason, in.sess.infoMsg = "", "", ""
		}
	}
	n := 0
	for _, b := range p.batches {
		if !b.tried {
			break
		}
		for _, le := range b.ledgers {
			if !le.stored {
				s.refused.Add(1)
				s.st.dirty = true // retried once the log has caught up
				continue
			}
			s.st.applyMine(le.ev, le.seq)
		}
		for _, le := range b.ledgers {
			if !le.stored {
				continue
			}
			for _, pl := range le.places {
				if !pl.stored {
					s.refused.Add(1)
					continue // its reservation is void once the move reaches us
				}
				s.metrics.placed(pl.sess.spec.ScalingGroup, pl.ev.Time.Sub(pl.sess.since))
				s.st.applyMine(pl.ev, pl.seq)
				n++
			}
		}
	}
	s.placed.Add(int64(n))
}
