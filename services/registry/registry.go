package registry

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/bai-sh/bai/pkg/events"
	"github.com/bai-sh/bai/pkg/events/streams"
)

// Errors of this package.
var (
	// ErrConfig: the Config is invalid.
	ErrConfig = errors.New("registry: invalid config")
	// ErrStarted: Run was called a second time.
	ErrStarted = errors.New("registry: already started")
)

// DefaultDurable is the name of the registry's consumer of the session log.
const DefaultDurable = "bai-registry"

const (
	maxBatch       = 512              // messages applied in one transaction
	pullBuffer     = 1024             // messages buffered by the client
	maxAckPending  = 4 * pullBuffer   // the consumer's limit of unacknowledged messages
	retryBackoff   = 1 * time.Second  // after a failed commit or a lost consumer
	consumerAckTTL = 30 * time.Second // AckWait of the consumer
)

// Config configures a Service.
type Config struct {
	// Streams are the options of the streams it provisions (replicas: 0
	// is streams.DefaultReplicas). Default: zero.
	Streams streams.Options
	// NC is the connection to NATS. Required.
	NC *nats.Conn
	// Log receives the service's logs. Default: none (zerolog.Nop()).
	Log zerolog.Logger
	// Path is the bbolt file that holds the projection; its directory is
	// created. Required.
	Path string
	// Durable names the JetStream consumer of the session log. Default
	// "bai-registry". Each registry with its own file needs its own name.
	Durable string
	// AdminAccessKey is the key with the admin role: it may list other
	// keys' sessions. Default: none. (isAdmin is the one place that
	// decides; a keypairs bucket can replace it.)
	AdminAccessKey string
	// IdleTimeout is the gateway's idle timeout, shown in idle_checks.
	// Default 30 minutes; negative: none.
	IdleTimeout time.Duration
	// Metrics receives the registry's collectors (metrics.go: sessions
	// by status, lag behind the log). Default: nil, no metrics.
	Metrics prometheus.Registerer

	// noSync turns off fsync in bbolt, for benchmarks only.
	noSync bool
}

// Service projects the session log into bbolt and answers queries on it.
type Service struct {
	cfg     Config
	log     zerolog.Logger
	ready   chan struct{}
	started atomic.Bool
	applied atomic.Uint64
	stream  atomic.Pointer[jetstream.Stream]
	js      jetstream.JetStream

	// appliedMu guards appliedCh, closed and replaced at each applied batch
	// so that readers can wait for the projection to catch up.
	appliedMu sync.Mutex
	appliedCh chan struct{}

	// mu guards st for the API handlers: the store is closed under its
	// write lock, so no handler reads a closed file.
	mu sync.RWMutex
	st *store
}

// New validates cfg and fills its defaults; it starts nothing.
func New(cfg Config) (*Service, error) {
	if cfg.NC == nil {
		return nil, fmt.Errorf("%w: NC is required", ErrConfig)
	}
	if cfg.Path == "" {
		return nil, fmt.Errorf("%w: Path is required", ErrConfig)
	}
	if cfg.Durable == "" {
		cfg.Durable = DefaultDurable
	}
	if cfg.IdleTimeout == 0 {
		cfg.IdleTimeout = 30 * time.Minute
	}
	if !events.ValidToken(cfg.Durable) {
		return nil, fmt.Errorf("%w: durable name %q", ErrConfig, cfg.Durable)
	}
	s := &Service{
		cfg:       cfg,
		log:       cfg.Log.With().Str("component", "registry").Logger(),
		ready:     make(chan struct{}),
		appliedCh: make(chan struct{}),
	}
	if err := s.registerMetrics(cfg.Metrics); err != nil {
		return nil, fmt.Errorf("%w: metrics: %v", ErrConfig, err)
	}
	return s, nil
}

// Ready is closed once the service answers requests and consumes the log.
func (s *Service) Ready() <-chan struct{} { return s.ready }

// AppliedSeq is the last session log sequence the projection has applied.
func (s *Service) AppliedSeq() uint64 { return s.applied.Load() }

func (s *Service) setApplied(seq uint64) {
	s.applied.Store(seq)
	s.appliedMu.Lock()
	close(s.appliedCh)
	s.appliedCh = make(chan struct{})
	s.appliedMu.Unlock()
}

// catchUp waits, at most maxWait, until the projection has applied every
// event the log held when it was called. A query that follows it sees
// everything published before the query was sent: a client that subscribes
// to live events and then asks for history misses nothing at the seam.
// It reports whether it got there.
func (s *Service) catchUp(maxWait time.Duration) bool {
	st := s.stream.Load()
	if st == nil {
		return false
	}
	ctx, cancel := context.WithTimeout(context.Background(), maxWait)
	defer cancel()
	info, err := (*st).Info(ctx)
	if err != nil {
		return false
	}
	for {
		s.appliedMu.Lock()
		ch := s.appliedCh
		s.appliedMu.Unlock()
		if s.applied.Load() >= info.State.LastSeq {
			return true
		}
		select {
		case <-ch:
		case <-ctx.Done():
			s.log.Warn().Uint64("applied_seq", s.applied.Load()).Uint64("last_seq", info.State.LastSeq).Msg("query_answered_before_the_projection_caught_up")
			return false
		}
	}
}

// setupRetry logs one retry of Run's set-up.
func (s *Service) setupRetry(attempt int, wait time.Duration, err error) {
	s.log.Warn().Err(err).Int("attempt", attempt).Dur("retry_in", wait).Msg("jetstream_not_ready_retrying")
}

// Run provisions the streams, opens the file, consumes the session log and
// serves the API until ctx ends; then it stops and closes the file. It
// returns nil on a clean cancel.
func (s *Service) Run(ctx context.Context) (err error) {
	if !s.started.CompareAndSwap(false, true) {
		return ErrStarted
	}
	js, err := jetstream.New(s.cfg.NC)
	if err != nil {
		return fmt.Errorf("registry jetstream: %w", err)
	}
	s.js = js
	// A cluster electing, or a node coming back, answers JetStream
	// requests with 503 or not at all for a moment: the set-up is retried
	// (a log line per attempt) until it works or ctx ends; any other error (a
	// refusal, a disk) ends Run.
	if err := streams.RetryTransient(ctx, s.setupRetry, func(ctx context.Context) error {
		return streams.Provision(ctx, js, s.cfg.Streams)
	}); err != nil {
		return fmt.Errorf("registry: %w", err)
	}
	if st, err := js.Stream(ctx, streams.Sessions); err == nil {
		s.stream.Store(&st)
	}
	st, err := openStore(s.cfg.Path, s.cfg.noSync, s.log, s.cfg.AdminAccessKey)
	if err != nil {
		return err
	}
	st.idleTimeout = s.cfg.IdleTimeout
	s.st = st
	defer func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if cerr := st.close(); cerr != nil && err == nil {
			err = fmt.Errorf("close registry database: %w", cerr)
		}
		s.st = nil
	}()
	applied, err := st.appliedSeq()
	if err != nil {
		return fmt.Errorf("registry applied sequence: %w", err)
	}
	s.applied.Store(applied)

	var (
		cons  jetstream.Consumer
		fresh bool // cons was just made at applied+1
	)
	if err := streams.RetryTransient(ctx, s.setupRetry, func(ctx context.Context) (err error) {
		cons, fresh, err = s.consumer(ctx, js, false)
		return err
	}); err != nil {
		return err
	}
	svc, err := s.serve()
	if err != nil {
		return err
	}
	defer func() {
		if serr := svc.Stop(); serr != nil {
			s.log.Warn().Err(serr).Msg("stop_micro_service")
		}
	}()
	s.log.Info().Str("path", s.cfg.Path).Uint64("applied_seq", applied).Msg("registry_ready")
	close(s.ready)

	for {
		err := s.consume(ctx, cons, fresh)
		gap := errors.Is(err, errLogGap)
		for {
			if ctx.Err() != nil {
				return nil
			}
			if s.cfg.NC.IsClosed() {
				return fmt.Errorf("registry: nats connection closed: %w", err)
			}
			if gap {
				s.log.Warn().Err(err).Msg("session_log_gap_reading_again")
			} else {
				s.log.Warn().Err(err).Msg("session_log_consumer_lost_recreating")
				select {
				case <-ctx.Done():
					return nil
				case <-time.After(retryBackoff):
				}
			}
			if cons, fresh, err = s.consumer(ctx, js, gap); err == nil {
				break
			}
			gap = false // waits before the next try
		}
	}
}

// errLogGap: a message of the session log came past the next sequence.
var errLogGap = errors.New("session log read with a gap")

// records are the records of batch's messages (the messages without
// metadata skipped, with a warning) up to a gap: n is how many messages
// they come from, gapSeq the sequence of the message after the gap (0:
// none). The consumer reads the whole log (its filter is the stream's one
// subject), so the next message is the next sequence; one further on was
// delivered after messages lost on the way (a reconnect during a leader
// change), which the batch's one ack (AckAll) would acknowledge unseen.
// first: the consumer was just made at applied+1, so its first message
// may be further on (the log's head has expired); it is cleared by the
// first message past applied. A message applied already (a redelivery)
// is kept: applyBatch skips it.
func (s *Service) records(batch []jetstream.Msg, applied uint64, first *bool) (recs []record, n int, gapSeq uint64) {
	recs = make([]record, 0, len(batch))
	next := applied + 1
	for i, m := range batch {
		md, err := m.Metadata()
		if err != nil {
			s.log.Warn().Err(err).Str("subject", m.Subject()).Msg("message_without_metadata_skipped")
			continue
		}
		switch seq := md.Sequence.Stream; {
		case seq < next:
		case seq == next || *first:
			next, *first = seq+1, false
		default:
			return recs, i, seq
		}
		recs = append(recs, record{seq: md.Sequence.Stream, subject: m.Subject(), data: m.Data()})
	}
	return recs, len(batch), 0
}

// consumer returns the durable consumer of the session log, positioned
// right after what the file has applied. The existing one is reused when it
// delivered exactly that much (and replace is false); otherwise (its
// buffered messages went unapplied, some were lost on the way, the file
// was lost or replaced, another config) it is replaced: waiting for
// redeliveries would be slow and would interleave them with newer
// messages. fresh: it was made now, at applied+1.
func (s *Service) consumer(ctx context.Context, js jetstream.JetStream, replace bool) (cons jetstream.Consumer, fresh bool, err error) {
	applied := s.applied.Load()
	name := s.cfg.Durable
	cons, err = js.Consumer(ctx, streams.Sessions, name)
	switch {
	case err == nil:
		ci := cons.CachedInfo()
		if !replace && ci.Delivered.Stream == applied && ci.Config.FilterSubject == events.AllSessionsFilter &&
			ci.Config.AckPolicy == jetstream.AckAllPolicy {
			return cons, false, nil
		}
		s.log.Info().Uint64("delivered_seq", ci.Delivered.Stream).Uint64("applied_seq", applied).Msg("replacing_session_log_consumer")
		if err := js.DeleteConsumer(ctx, streams.Sessions, name); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
			return nil, false, fmt.Errorf("registry delete consumer %s: %w", name, err)
		}
	case !errors.Is(err, jetstream.ErrConsumerNotFound):
		return nil, false, fmt.Errorf("registry consumer %s: %w", name, err)
	}
	cfg := jetstream.ConsumerConfig{
		Durable:       name,
		Description:   "bai registry projection",
		FilterSubject: events.AllSessionsFilter,
		// One ack per applied batch, for the batch's last message: the
		// projection applies the log in order, so that acks all before it.
		AckPolicy:     jetstream.AckAllPolicy,
		AckWait:       consumerAckTTL,
		MaxAckPending: maxAckPending,
		DeliverPolicy: jetstream.DeliverAllPolicy,
	}
	if applied > 0 {
		cfg.DeliverPolicy = jetstream.DeliverByStartSequencePolicy
		cfg.OptStartSeq = applied + 1
	}
	cons, err = js.CreateConsumer(ctx, streams.Sessions, cfg)
	if err != nil {
		return nil, false, fmt.Errorf("registry create consumer %s: %w", name, err)
	}
	return cons, true, nil
}

// consume applies the log in batches until ctx ends (nil), the consumer
// fails (its error), or a message comes past a gap (errLogGap; what came
// before it is applied). fresh: cons was just made at applied+1.
func (s *Service) consume(ctx context.Context, cons jetstream.Consumer, fresh bool) error {
	it, err := cons.Messages(jetstream.PullMaxMessages(pullBuffer), streams.FollowHeartbeat, streams.FollowExpiry)
	if err != nil {
		return fmt.Errorf("registry consume: %w", err)
	}
	msgs := make(chan jetstream.Msg, maxBatch)
	done := make(chan struct{})
	var readErr error
	var wg sync.WaitGroup
	wg.Go(func() {
		defer close(msgs)
		for {
			// Ended by it.Stop (below), not by ctx: a read error is
			// what the caller reports.
			m, err := streams.Next(context.Background(), it)
			if err != nil {
				readErr = err
				return
			}
			select {
			case msgs <- m:
			case <-done:
				return
			}
		}
	})
	defer func() {
		close(done)
		it.Stop()
		wg.Wait()
	}()

	batch := make([]jetstream.Msg, 0, maxBatch)
	for {
		select {
		case <-ctx.Done():
			return nil
		case m, ok := <-msgs:
			if !ok {
				wg.Wait()
				return fmt.Errorf("registry consume: %w", readErr)
			}
			batch = append(batch[:0], m)
		}
	more:
		for len(batch) < maxBatch {
			select {
			case m, ok := <-msgs:
				if !ok {
					break more
				}
				batch = append(batch, m)
			default:
				break more
			}
		}
		recs, n, gapSeq := s.records(batch, s.applied.Load(), &fresh)
		if n > 0 && !s.applyRecords(ctx, recs, batch[n-1]) {
			return nil
		}
		if gapSeq != 0 {
			return fmt.Errorf("%w: sequence %d after %d", errLogGap, gapSeq, s.applied.Load())
		}
	}
}

// applyRecords applies one batch's records, retrying a failed commit
// until ctx ends (false), then acknowledges last, the batch's last
// message: the consumer acks all, so that covers the batch (a bad event
// is applied as skipped, with the others, and acknowledged with them).
func (s *Service) applyRecords(ctx context.Context, recs []record, last jetstream.Msg) bool {
	for {
		_, applied, err := s.st.applyBatch(recs)
		if err == nil {
			s.setApplied(applied)
			if err := last.Ack(); err != nil {
				s.log.Warn().Err(err).Msg("ack_applied_batch")
			}
			return true
		}
		s.log.Error().Err(err).Msg("apply_batch")
		select {
		case <-ctx.Done():
			return false
		case <-time.After(retryBackoff):
		}
	}
}

// serve starts the micro service.
func (s *Service) serve() (micro.Service, error) {
	svc, err := micro.AddService(s.cfg.NC, micro.Config{
		Name:        "bai-registry",
		Version:     "0.1.0",
		Description: "bai session registry: list, get and history of sessions",
		// Its status in STATS: how far it has applied the log (health.go).
		StatsHandler: func(*micro.Endpoint) any { return s.status() },
	})
	if err != nil {
		return nil, fmt.Errorf("registry micro service: %w", err)
	}
	for _, ep := range []struct {
		name, op string
		h        func(ak string, data []byte) (any, error)
	}{
		{"session_list", events.OpSessionList, s.handleList},
		{"session_get", events.OpSessionGet, s.handleGet},
		{"session_history", events.OpSessionHistory, s.handleHistory},
		{"session_usage", events.OpSessionUsage, s.handleUsage},
		{"session_logs", events.OpSessionLogs, s.handleLogs},
	} {
		if err := svc.AddEndpoint(ep.name, s.handler(ep.h), micro.WithEndpointSubject(events.APIPattern(ep.op))); err != nil {
			_ = svc.Stop()
			return nil, fmt.Errorf("registry endpoint %s: %w", ep.name, err)
		}
		// The same operation asked by another service (the gateway) on
		// its service API subject, answered on that service's inbox.
		if err := svc.AddEndpoint(ep.name+"_internal", s.handler(ep.h), micro.WithEndpointSubject(events.ServiceAPIPattern(ep.op))); err != nil {
			_ = svc.Stop()
			return nil, fmt.Errorf("registry endpoint %s: %w", ep.name, err)
		}
	}
	return svc, nil
}
