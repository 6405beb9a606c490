// Package scheduler places pending sessions on agents. It replays the
// session log into memory (the pending queue and the capacity ledger),
// watches agent heartbeats, and publishes placements, cancellations and
// terminations with the session's expected last sequence, so the log
// itself refuses a decision made on a stale view.
package scheduler

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
	"github.com/rs/zerolog"

	"github.com/bai-sh/bai/pkg/events"
	"github.com/bai-sh/bai/pkg/events/streams"
	"github.com/bai-sh/bai/pkg/slots"
)

// ErrConfig wraps every configuration error.
var ErrConfig = errors.New("scheduler: invalid config")

// Config configures a scheduler.
type Config struct {
	// NC is the connection to NATS. Required.
	NC *nats.Conn
	// Log is the logger. Default: zerolog.Nop().
	Log zerolog.Logger
	// AgentTimeout is how old a heartbeat may be before its agent gets no
	// more placements. Default: 10s.
	AgentTimeout time.Duration
	// Tick is how often it retries pending work without news. Default: 1s.
	Tick time.Duration
	// Streams are the options of the streams it provisions. Default: zero.
	Streams streams.Options
}

// Service is a running scheduler.
type Service struct {
	cfg   Config
	log   zerolog.Logger
	js    jetstream.JetStream
	ready chan struct{}
	once  sync.Once

	mu sync.Mutex // guards st, for Snapshot
	st *state
}

// New validates cfg and fills its defaults; it starts nothing.
func New(cfg Config) (*Service, error) {
	if cfg.NC == nil {
		return nil, fmt.Errorf("%w: NC is required", ErrConfig)
	}
	if cfg.AgentTimeout <= 0 {
		cfg.AgentTimeout = 10 * time.Second
	}
	if cfg.Tick <= 0 {
		cfg.Tick = time.Second
	}
	js, err := jetstream.New(cfg.NC)
	if err != nil {
		return nil, fmt.Errorf("%w: jetstream: %v", ErrConfig, err)
	}
	return &Service{
		cfg:   cfg,
		log:   cfg.Log.With().Str("component", "scheduler").Logger(),
		js:    js,
		ready: make(chan struct{}),
		st:    newState(),
	}, nil
}

// Ready is closed once the scheduler has replayed the log and decides.
func (s *Service) Ready() <-chan struct{} { return s.ready }

// input is one thing the decision loop reacts to.
type input struct {
	msg   jetstream.Msg
	agent *events.AgentInfo
	gone  string // an agent key deleted
}

// Run schedules until ctx ends.
func (s *Service) Run(ctx context.Context) error {
	if err := streams.Provision(ctx, s.js, s.cfg.Streams); err != nil {
		return err
	}
	kv, err := s.js.KeyValue(ctx, streams.Agents)
	if err != nil {
		return fmt.Errorf("scheduler: agents bucket: %w", err)
	}
	cons, err := s.js.OrderedConsumer(ctx, streams.Sessions, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{events.AllSessionsFilter},
		DeliverPolicy:  jetstream.DeliverAllPolicy,
	})
	if err != nil {
		return fmt.Errorf("scheduler: session log consumer: %w", err)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		return fmt.Errorf("scheduler: consumer info: %w", err)
	}
	caughtUp := info.NumPending == 0

	in := make(chan input, 1024)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()

	iter, err := cons.Messages()
	if err != nil {
		return fmt.Errorf("scheduler: session log: %w", err)
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			msg, err := iter.Next()
			if err != nil {
				return
			}
			select {
			case in <- input{msg: msg}:
			case <-ctx.Done():
				return
			}
		}
	}()
	context.AfterFunc(ctx, iter.Stop)

	watcher, err := kv.WatchAll(ctx)
	if err != nil {
		return fmt.Errorf("scheduler: watch agents: %w", err)
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer func() { _ = watcher.Stop() }()
		for {
			select {
			case <-ctx.Done():
				return
			case e, ok := <-watcher.Updates():
				if !ok {
					return
				}
				if e == nil {
					continue // the initial values are in
				}
				var it input
				if e.Operation() != jetstream.KeyValuePut {
					it.gone = e.Key()
				} else {
					var a events.AgentInfo
					if err := json.Unmarshal(e.Value(), &a); err != nil || !events.ValidToken(a.ID) {
						s.log.Warn().Str("key", e.Key()).Msg("bad_agent_heartbeat")
						continue
					}
					it.agent = &a
				}
				select {
				case in <- it:
				case <-ctx.Done():
					return
				}
			}
		}
	}()

	tick := time.NewTicker(s.cfg.Tick)
	defer tick.Stop()
	if caughtUp {
		s.once.Do(func() { close(s.ready) })
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		case it := <-in:
			if s.take(it) {
				caughtUp = true
			}
		drain:
			for {
				select {
				case it := <-in:
					if s.take(it) {
						caughtUp = true
					}
				default:
					break drain
				}
			}
		}
		if caughtUp {
			s.once.Do(func() { close(s.ready) })
			s.decide(ctx)
		}
	}
}

// take applies one input to the state; it reports whether the log replay
// has caught up with the stream.
func (s *Service) take(it input) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case it.agent != nil:
		if err := s.st.heartbeat(it.agent, time.Now()); err != nil {
			s.log.Warn().Err(err).Str("agent_id", it.agent.ID).Msg("bad_agent_capacity")
		}
	case it.gone != "":
		s.st.agentGone(it.gone)
	case it.msg != nil:
		md, err := it.msg.Metadata()
		if err != nil {
			return false
		}
		ev, err := events.Decode(it.msg.Subject(), it.msg.Data())
		if err != nil {
			s.log.Warn().Err(err).Uint64("seq", md.Sequence.Stream).Msg("bad_event")
		} else {
			s.st.apply(ev, md.Sequence.Stream)
		}
		return md.NumPending == 0
	}
	return false
}

// decide acts on the current state: terminations first, then placements.
func (s *Service) decide(ctx context.Context) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	for _, sess := range s.st.toTerminate() {
		s.terminate(ctx, sess)
	}
	for _, sess := range s.st.pendingInOrder() {
		a := s.st.pick(sess, now, s.cfg.AgentTimeout)
		if a == nil {
			continue
		}
		s.place(ctx, sess, a)
	}
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
	if seq, ok := s.publish(ctx, sess, ev); ok {
		sess.terminateReason = ""
		s.st.apply(ev, seq)
	}
}

func (s *Service) place(ctx context.Context, sess *session, a *agent) {
	ev := s.event(sess, events.EventScheduled)
	ev.AgentID = a.info.ID
	ev.AgentEpoch = a.info.Epoch
	ev.Session = sess.spec
	if seq, ok := s.publish(ctx, sess, ev); ok {
		s.st.apply(ev, seq)
		s.log.Debug().Str("session_id", sess.spec.ID).Str("agent_id", a.info.ID).Msg("session_scheduled")
	}
}

func (s *Service) event(sess *session, name events.Name) *events.Event {
	return &events.Event{
		V: events.Version, ID: nuid.Next(), Name: name, Time: time.Now().UTC(),
		AccessKey: sess.spec.AccessKey, SessionID: sess.spec.ID, KernelID: sess.spec.MainKernelID,
	}
}

// publish writes a decision with the session's last known sequence as a
// precondition. A refusal means the view was stale: the newer event is on
// its way through the consumer and the decision is taken again then.
func (s *Service) publish(ctx context.Context, sess *session, ev *events.Event) (uint64, bool) {
	subj, err := events.EventSubject(ev)
	if err != nil {
		s.log.Error().Err(err).Msg("bad_decision_subject")
		return 0, false
	}
	data, err := json.Marshal(ev)
	if err != nil {
		return 0, false
	}
	filter, _ := events.SessionFilter(sess.spec.AccessKey, sess.spec.ID)
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	ack, err := s.js.Publish(pctx, subj, data,
		jetstream.WithMsgID(ev.ID),
		jetstream.WithExpectLastSequenceForSubject(sess.lastSeq, filter))
	if err != nil {
		if !streams.IsWrongLastSequence(err) {
			s.log.Warn().Err(err).Str("session_id", sess.spec.ID).Str("event", string(ev.Name)).Msg("decision_publish_failed")
		}
		return 0, false
	}
	return ack.Sequence, true
}

// Snapshot is a copy of what the scheduler believes, for tests and the
// operator: per agent, the slots it placed there.
type Snapshot struct {
	Pending int
	Placed  map[string]slots.Set // agent id → sum of placed slots
}

// Snapshot returns the current ledger.
func (s *Service) Snapshot() Snapshot {
	s.mu.Lock()
	defer s.mu.Unlock()
	snap := Snapshot{Pending: len(s.st.pending), Placed: map[string]slots.Set{}}
	for id, a := range s.st.agents {
		snap.Placed[id] = a.used.Clone()
	}
	return snap
}
