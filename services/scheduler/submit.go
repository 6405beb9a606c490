package scheduler

import (
	"context"
	"errors"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/bai-sh/bai/pkg/events"
	"github.com/bai-sh/bai/pkg/events/streams"
)

// submitter publishes a plan's events and records in the plan what the
// log stored (plan.go). It reads nothing of the state but the plan.
type submitter interface {
	submit(ctx context.Context, p *plan)
}

// jsSubmitter submits plans to the JetStream session log.
type jsSubmitter struct {
	js  jetstream.JetStream
	log zerolog.Logger
}

// decisionTimeout bounds the wait for one decision's acknowledgement, and
// for one step of a placement commit.
const decisionTimeout = 5 * time.Second

func (j *jsSubmitter) submit(ctx context.Context, p *plan) {
	for _, list := range p.orders {
		for _, o := range list {
			if _, err := j.publish(ctx, o.ev, streams.Guard{}); err != nil {
				break // the rest at the next step
			}
			o.stored = true
		}
	}
	for _, d := range p.decisions {
		expect := d.expect
		for _, ev := range d.evs {
			seq, err := j.publish(ctx, ev, streams.Guard{Filter: d.filter, Seq: expect})
			if err != nil {
				break
			}
			d.seqs = append(d.seqs, seq)
			expect = seq
		}
		if d.kill != nil && len(d.seqs) == len(d.evs) {
			_, err := j.publish(ctx, d.kill, streams.Guard{})
			d.killStored = err == nil
		}
	}
	for _, in := range p.infos {
		// Asynchronous: it only informs; the log's echo updates lastSeq.
		in.sent = j.inform(in.ev) == nil
	}
	for _, b := range p.batches {
		b.tried = true
		if !j.commit(ctx, p, b) {
			return
		}
	}
}

// commit publishes a batch in the two steps Service.commit describes and
// reports whether every ledger entry was stored.
func (j *jsSubmitter) commit(ctx context.Context, p *plan, b *batch) bool {
	// Step 1: the ledger entries.
	acks := make([]jetstream.PubAckFuture, len(b.ledgers))
	for i, le := range b.ledgers {
		acks[i] = j.publishAsync(le.ev, streams.Guard{OwnSubject: true, Seq: p.ledgerSeq[le.ev.AgentID]})
	}
	ok := true
	wctx, cancel := context.WithTimeout(ctx, decisionTimeout)
	defer cancel()
	for i, le := range b.ledgers {
		seq, err := j.waitAck(wctx, acks[i])
		if err != nil {
			ok = false
			continue
		}
		le.seq, le.stored = seq, true
		p.ledgerSeq[le.ev.AgentID] = seq
	}
	// Step 2: the placements on the agents whose entries were stored.
	var places []*placement
	for _, le := range b.ledgers {
		if le.stored {
			places = append(places, le.places...)
		}
	}
	packs := make([]jetstream.PubAckFuture, len(places))
	for i, pl := range places {
		packs[i] = j.publishAsync(pl.ev, streams.Guard{Filter: pl.filter, Seq: pl.expect})
	}
	wctx, cancel = context.WithTimeout(ctx, decisionTimeout)
	defer cancel()
	for i, pl := range places {
		seq, err := j.waitAck(wctx, packs[i])
		if err != nil {
			continue // its reservation is void once the move reaches us
		}
		pl.seq, pl.stored = seq, true
	}
	return ok
}

// publishAsync publishes ev with guard g, not waiting for the
// acknowledgement (waitAck). A nil future means it could not be sent.
func (j *jsSubmitter) publishAsync(ev *events.Event, g streams.Guard) jetstream.PubAckFuture {
	f, err := streams.PublishAsync(j.js, ev, g)
	if err != nil {
		j.log.Warn().Err(err).Str("event", string(ev.Name)).Msg("placement_publish_failed")
		return nil
	}
	return f
}

// inform publishes ev, not waiting for the acknowledgement.
func (j *jsSubmitter) inform(ev *events.Event) error {
	_, err := streams.PublishAsync(j.js, ev, streams.Guard{})
	return err
}

// errNotSent is the outcome of a publish that never left.
var errNotSent = errors.New("not sent")

// waitAck waits for f's acknowledgement until ctx is done and returns
// the stored sequence. An error other than a refusal leaves the outcome
// unknown: what was stored after all reaches the state through the log.
func (j *jsSubmitter) waitAck(ctx context.Context, f jetstream.PubAckFuture) (uint64, error) {
	if f == nil {
		return 0, errNotSent
	}
	select {
	case ack := <-f.Ok():
		return ack.Sequence, nil
	case err := <-f.Err():
		if !streams.IsWrongLastSequence(err) {
			j.log.Warn().Err(err).Msg("placement_publish_failed")
		}
		return 0, err
	case <-ctx.Done():
		j.log.Warn().Err(ctx.Err()).Msg("placement_ack_timeout")
		return 0, ctx.Err()
	}
}

// publish publishes ev with guard g (the zero Guard: none) and waits
// for the acknowledgement (at most decisionTimeout).
func (j *jsSubmitter) publish(ctx context.Context, ev *events.Event, g streams.Guard) (uint64, error) {
	pctx, cancel := context.WithTimeout(ctx, decisionTimeout)
	defer cancel()
	ack, err := streams.Publish(pctx, j.js, ev, g)
	if err != nil {
		if !streams.IsWrongLastSequence(err) {
			j.log.Warn().Err(err).Str("session_id", ev.SessionID).Str("event", string(ev.Name)).Msg("decision_publish_failed")
		}
		return 0, err
	}
	return ack.Sequence, nil
}
