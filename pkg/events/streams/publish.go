package streams

import (
	"context"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/bai-sh/bai/pkg/events"
)

// Guard is the condition an event is published on (DESIGN.md section 3):
// the log refuses it (IsWrongLastSequence) when the condition no longer
// holds. The zero Guard publishes unconditionally.
type Guard struct {
	// Filter, when set, makes the condition: the last message on the
	// subjects matching Filter (a session's events.SessionFilter) has
	// sequence Seq (0: there is none).
	Filter string
	// OwnSubject, when set (and Filter is not), makes the condition: the
	// last message on the event's own subject (an agent's ledger) has
	// sequence Seq.
	OwnSubject bool
	Seq        uint64
}

// OnSession is the guard of a decision about a session: the last event
// of session sid of ak is at seq (0: the session has no event yet).
func OnSession(ak, sid string, seq uint64) Guard {
	filter, _ := events.SessionFilter(ak, sid)
	return Guard{Filter: filter, Seq: seq}
}

// PublishOpts are the options of publishing ev with guard g: ev's id as
// the message id (Nats-Msg-Id: a retry is not stored twice), then g's
// condition (Nats-Expected-Last-Subject-Sequence and, for a filter,
// ...-Subject), then opts, which may override the message id.
func PublishOpts(ev *events.Event, g Guard, opts ...jetstream.PublishOpt) []jetstream.PublishOpt {
	out := make([]jetstream.PublishOpt, 0, 2+len(opts))
	out = append(out, jetstream.WithMsgID(ev.ID))
	switch {
	case g.Filter != "":
		out = append(out, jetstream.WithExpectLastSequenceForSubject(g.Seq, g.Filter))
	case g.OwnSubject:
		out = append(out, jetstream.WithExpectLastSequencePerSubject(g.Seq))
	}
	return append(out, opts...)
}

// encode is ev's subject and body.
func encode(ev *events.Event) (string, []byte, error) {
	subj, err := events.EventSubject(ev)
	if err != nil {
		return "", nil, err
	}
	data, err := events.Marshal(ev)
	if err != nil {
		return "", nil, err
	}
	return subj, data, nil
}

// Publish publishes ev on its subject with its id as the message id and
// guard g, and waits for the log's acknowledgement until ctx is done.
func Publish(ctx context.Context, js jetstream.JetStream, ev *events.Event, g Guard, opts ...jetstream.PublishOpt) (*jetstream.PubAck, error) {
	subj, data, err := encode(ev)
	if err != nil {
		return nil, err
	}
	return js.Publish(ctx, subj, data, PublishOpts(ev, g, opts...)...)
}

// PublishAsync publishes ev as Publish does, without waiting for the
// acknowledgement.
func PublishAsync(js jetstream.JetStream, ev *events.Event, g Guard, opts ...jetstream.PublishOpt) (jetstream.PubAckFuture, error) {
	subj, data, err := encode(ev)
	if err != nil {
		return nil, err
	}
	return js.PublishAsync(subj, data, PublishOpts(ev, g, opts...)...)
}
