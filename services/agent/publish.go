package agent

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/bai-sh/bai/pkg/events"
	"github.com/bai-sh/bai/pkg/events/streams"
)

// Publishing the agent's events about its kernels and sessions, each
// with its id as the message id (streams.Publish).

// Publishing: each try's timeout, and how long a report is retried. A
// NATS node restarting or a cluster electing answers "no response from
// stream" for seconds; a report given up then (a session's end) would
// leave its session unfinished for ever, so the agent keeps trying for
// publishPatience (the message id makes a repeat harmless).
const (
	publishTimeout  = 5 * time.Second
	publishPatience = 2 * time.Minute
	publishMaxPause = 2 * time.Second
)

// publish publishes one event about kernel k.
func (s *Service) publish(ctx context.Context, k *kernel, name events.Name, set func(*events.Event)) error {
	e := s.event(k.spec.AccessKey, k.spec.ID, k.spec.MainKernelID, name)
	if set != nil {
		set(e)
	}
	return s.publishEvent(ctx, e)
}

// publishSession publishes one event about a session the agent has no
// kernel of.
func (s *Service) publishSession(ctx context.Context, ak, sid, kid string, name events.Name, reason events.Reason) error {
	e := s.event(ak, sid, kid, name)
	e.Reason = reason
	return s.publishEvent(ctx, e)
}

func (s *Service) event(ak, sid, kid string, name events.Name) *events.Event {
	return &events.Event{
		V:          events.Version,
		ID:         events.NewID(),
		Name:       name,
		Time:       time.Now().UTC(),
		AccessKey:  ak,
		SessionID:  sid,
		KernelID:   kid,
		AgentID:    s.id,
		AgentEpoch: s.epoch,
	}
}

// publishEvent publishes e on its subject, synchronously, with its id as
// the message id, retrying for publishPatience.
func (s *Service) publishEvent(ctx context.Context, e *events.Event) error {
	if _, err := events.EventSubject(e); err != nil {
		return err
	}
	err := patiently(ctx, func(try int, err error) {
		s.log.Warn().Err(err).Str("event", string(e.Name)).Int("try", try).Msg("publish_event")
	}, func(ctx context.Context) error {
		_, err := streams.Publish(ctx, s.js, e, streams.Guard{})
		return err
	})
	if err != nil {
		return fmt.Errorf("publish %s of session %s: %w", e.Name, e.SessionID, err)
	}
	return nil
}

// patiently calls publish, each try bounded by publishTimeout, until it
// succeeds, ctx ends, or publishPatience has passed since the first try;
// between tries it tells onRetry (when set) and pauses 200 ms more each
// time, at most publishMaxPause. It returns the last try's error, or
// ctx's.
func patiently(ctx context.Context, onRetry func(try int, err error), publish func(context.Context) error) error {
	start := time.Now()
	for try := 1; ; try++ {
		pctx, cancel := context.WithTimeout(ctx, publishTimeout)
		err := publish(pctx)
		cancel()
		if err == nil {
			return nil
		}
		if time.Since(start) >= publishPatience || ctx.Err() != nil {
			return err
		}
		if onRetry != nil {
			onRetry(try, err)
		}
		if err := pause(ctx, min(time.Duration(try)*200*time.Millisecond, publishMaxPause)); err != nil {
			return err
		}
	}
}

// eventBatch is events published asynchronously, in order, whose acks
// are still to be waited for.
type eventBatch struct {
	events  []*events.Event
	futures []jetstream.PubAckFuture // nil where the publish failed at once
}

// publishAsync publishes an event about kernel k, set (when not nil)
// first, without waiting for its ack; waitBatch waits for it.
func (s *Service) publishAsync(b *eventBatch, k *kernel, name events.Name, set func(*events.Event)) {
	e := s.event(k.spec.AccessKey, k.spec.ID, k.spec.MainKernelID, name)
	if set != nil {
		set(e)
	}
	b.events = append(b.events, e)
	// After an event that failed at once, publishing this one would put it
	// ahead of that one: waitBatch publishes both, in order.
	failed := len(b.futures) > 0 && b.futures[len(b.futures)-1] == nil
	var f jetstream.PubAckFuture
	if !failed {
		f, _ = streams.PublishAsync(s.js, e, streams.Guard{})
	}
	b.futures = append(b.futures, f)
}

// waitBatch waits for the acks of b's events. From the first event that
// was not acknowledged on, it publishes the events again, synchronously
// and in order, with their ids (the log drops those it already holds), so
// that the log has them in order or start fails and the placement is
// redelivered. b is empty afterwards.
func (s *Service) waitBatch(ctx context.Context, b *eventBatch) error {
	defer func() { b.events, b.futures = nil, nil }()
	timer := time.NewTimer(publishTimeout)
	defer timer.Stop()
	for i, f := range b.futures {
		ok := false
		if f != nil {
			select {
			case <-f.Ok():
				ok = true
			case err := <-f.Err():
				s.log.Warn().Err(err).Str("event", string(b.events[i].Name)).Msg("publish_event")
			case <-timer.C:
				s.log.Warn().Str("event", string(b.events[i].Name)).Msg("publish_event: no ack in time")
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		if ok {
			continue
		}
		for _, e := range b.events[i:] {
			if err := s.publishEvent(ctx, e); err != nil {
				return err
			}
		}
		return nil
	}
	return nil
}

// pause waits d or until ctx ends.
func pause(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

func jsonMarshal(v any) ([]byte, error) {
	data, err := events.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("encode: %w", err)
	}
	return data, nil
}
