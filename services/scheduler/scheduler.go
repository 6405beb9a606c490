// Package scheduler places pending sessions on agents. It replays the
// session log into memory (the pending queue and the capacity ledger),
// watches agent heartbeats, and publishes placements, cancellations and
// terminations with the session's expected last sequence, so the log
// itself refuses a decision made on a stale view.
package scheduler

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
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
	// more placements and, with sessions on it, is declared lost. Default: 10s.
	AgentTimeout time.Duration
	// Tick is how often it retries pending work without news. Default: 1s.
	Tick time.Duration
	// Streams are the options of the streams it provisions. Default: zero.
	Streams streams.Options
	// LeaseTTL is how long the leader's lease lasts unless renewed (every
	// LeaseTTL/3). A standby takes over at most LeaseTTL+LeaseTTL/3 after
	// the leader's last renewal. Default: 6s.
	LeaseTTL time.Duration
	// InstanceID names this scheduler in the lease. Default: random.
	InstanceID string
	// Default is the policy of scaling groups not in Groups.
	Default GroupPolicy
	// Groups are per scaling group policies.
	Groups map[string]GroupPolicy
	// Deadlines bound each non-final, non-running status; past it the
	// session moves to ERROR (TERMINATING: the order is repeated, then the
	// session is forced to TERMINATED). Missing statuses get DefaultDeadlines.
	Deadlines map[events.Status]time.Duration
	// TerminateRetries is how many times a TERMINATING past its deadline
	// is ordered again before it is forced. Default: 2.
	TerminateRetries int

	// forceLead makes the instance lead without a lease (tests of a split
	// brain).
	forceLead bool
	// Metrics receives the scheduler's collectors (metrics.go: placements
	// and their latency, queue depth per group, the agents' capacity,
	// use and heartbeat age). Default: nil, no metrics.
	Metrics prometheus.Registerer
}

// DefaultDeadlines are the status deadlines when Config.Deadlines has none.
var DefaultDeadlines = map[events.Status]time.Duration{
	events.StatusScheduled:   2 * time.Minute,
	events.StatusPreparing:   10 * time.Minute,
	events.StatusPulling:     time.Hour,
	events.StatusPrepared:    2 * time.Minute,
	events.StatusCreating:    10 * time.Minute,
	events.StatusTerminating: 2 * time.Minute,
	events.StatusError:       30 * time.Second,
}

// Service is a running scheduler.
type Service struct {
	cfg     Config
	log     zerolog.Logger
	js      jetstream.JetStream
	ready   chan struct{}
	once    sync.Once
	leading atomic.Bool
	refused atomic.Int64 // ledger entries and placements the log refused (a stale view)
	placed  atomic.Int64 // placements committed
	poke    chan struct{}

	// mu guards st against the readers (Snapshot, the agents' view):
	// the decision loop, the only writer, holds it while it writes or
	// plans, never while it waits for the log (decide).
	mu sync.Mutex
	st *state
	// sub publishes the decision loop's plans (submit.go).
	sub submitter
	// agents is the agents' heartbeat bucket, read directly before an
	// agent is declared lost (lostAgents).
	agents jetstream.KeyValue
	// agentWatchPaused drops the agent watch's updates (tests).
	agentWatchPaused atomic.Bool
	// storageFailed is when a write to the agents' bucket last failed
	// (lostAgents): no agent is lost for a silence before it.
	storageFailed time.Time
	// storageBack is when a write to the agents' bucket first worked
	// again after storageFailed: no agent is lost for a silence before it.
	storageBack time.Time
	// drainedIDs are the agents drained by an admin (drain.go).
	drainedIDs map[string]bool
	// reads is whether the agents' bucket could be read (silence.go).
	reads readHealth
	// infoBudget is what is left of this round's pending-info events.
	infoBudget int
	// key is infoKey(keyReason, keyMsg), the last one info computed.
	keyReason   events.Reason
	keyMsg, key string
	// metrics are nil without Config.Metrics (metrics.go).
	metrics *metrics
}

// New validates cfg and fills its defaults; it starts nothing.
func New(cfg Config) (*Service, error) {
	if cfg.NC == nil {
		return nil, fmt.Errorf("%w: NC is required", ErrConfig)
	}
	js, err := jetstream.New(cfg.NC)
	if err != nil {
		return nil, fmt.Errorf("%w: jetstream: %v", ErrConfig, err)
	}
	s, err := newService(cfg)
	if err != nil {
		return nil, err
	}
	s.js = js
	s.sub = &jsSubmitter{js: js, log: s.log}
	return s, nil
}

// newService validates cfg but its connection and fills its defaults;
// the Service it returns has no connection nor submitter yet (New gives
// them; the planner's tests give it a recorder).
func newService(cfg Config) (*Service, error) {
	if cfg.AgentTimeout < 0 || cfg.Tick < 0 || cfg.LeaseTTL < 0 || cfg.TerminateRetries < 0 {
		return nil, fmt.Errorf("%w: negative duration or count", ErrConfig)
	}
	if cfg.AgentTimeout == 0 {
		cfg.AgentTimeout = 10 * time.Second
	}
	if cfg.Tick == 0 {
		cfg.Tick = time.Second
	}
	if cfg.LeaseTTL == 0 {
		cfg.LeaseTTL = 6 * time.Second
	}
	if cfg.LeaseTTL < 300*time.Millisecond {
		return nil, fmt.Errorf("%w: lease TTL %s is under 300ms", ErrConfig, cfg.LeaseTTL)
	}
	if cfg.TerminateRetries == 0 {
		cfg.TerminateRetries = 2
	}
	if cfg.InstanceID == "" {
		cfg.InstanceID = events.NewID()
	}
	if err := cfg.Default.fill(); err != nil {
		return nil, err
	}
	groups := make(map[string]GroupPolicy, len(cfg.Groups))
	for name, g := range cfg.Groups {
		if err := g.fill(); err != nil {
			return nil, fmt.Errorf("scaling group %q: %w", name, err)
		}
		groups[name] = g
	}
	cfg.Groups = groups
	deadlines := maps.Clone(DefaultDeadlines)
	for st, d := range cfg.Deadlines {
		if _, ok := DefaultDeadlines[st]; !ok || d <= 0 {
			return nil, fmt.Errorf("%w: no deadline can be set for status %q, or %s is not positive", ErrConfig, st, d)
		}
		deadlines[st] = d
	}
	cfg.Deadlines = deadlines
	log := cfg.Log.With().Str("component", "scheduler").Str("instance", cfg.InstanceID).Logger()
	s := &Service{
		cfg:   cfg,
		log:   log,
		ready: make(chan struct{}),
		poke:  make(chan struct{}, 1),
		st:    newState(),

		drainedIDs: map[string]bool{},
	}
	var err error
	if s.metrics, err = s.newMetrics(cfg.Metrics); err != nil {
		return nil, fmt.Errorf("%w: metrics: %v", ErrConfig, err)
	}
	return s, nil
}

// Leader reports whether this instance leads now.
func (s *Service) Leader() bool { return s.leading.Load() }

// Ready is closed once the scheduler has replayed the log and decides.
func (s *Service) Ready() <-chan struct{} { return s.ready }

// input is one thing the decision loop reacts to.
type input struct {
	msg   jetstream.Msg
	agent *events.AgentInfo
	rev   uint64 // the agent's heartbeat's revision in the bucket
	gone  string // an agent key deleted
	// drainID is an agent whose drain key changed: drained or not (drain.go).
	drainID string
	drained bool
}

// setupRetry logs one retry of Run's set-up.
func (s *Service) setupRetry(attempt int, wait time.Duration, err error) {
	s.log.Warn().Err(err).Int("attempt", attempt).Dur("retry_in", wait).Msg("jetstream_not_ready_retrying")
}

// Run schedules until ctx ends.
func (s *Service) Run(ctx context.Context) error {
	// A cluster electing, or a node coming back, answers JetStream
	// requests with 503 or not at all for a moment: the set-up is retried
	// (a log line per attempt) until it works or ctx ends, as the binary's
	// start waits for NATS; any other error (a refusal, a disk) ends Run.
	var (
		kv   jetstream.KeyValue
		cons jetstream.Consumer
		info *jetstream.ConsumerInfo
	)
	err := streams.RetryTransient(ctx, s.setupRetry, func(ctx context.Context) error {
		if err := streams.Provision(ctx, s.js, s.cfg.Streams); err != nil {
			return err
		}
		var err error
		if kv, err = s.js.KeyValue(ctx, streams.Agents); err != nil {
			return fmt.Errorf("scheduler: agents bucket: %w", err)
		}
		cons, err = s.js.OrderedConsumer(ctx, streams.Sessions, jetstream.OrderedConsumerConfig{
			FilterSubjects: []string{events.AllSessionsFilter},
			DeliverPolicy:  jetstream.DeliverAllPolicy,
		})
		if err != nil {
			return fmt.Errorf("scheduler: session log consumer: %w", err)
		}
		if info, err = cons.Info(ctx); err != nil {
			return fmt.Errorf("scheduler: consumer info: %w", err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	s.agents = kv
	caughtUp := info.NumPending == 0

	in := make(chan input, 1024)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()

	iter, err := cons.Messages(streams.FollowHeartbeat, streams.FollowExpiry)
	if err != nil {
		return fmt.Errorf("scheduler: session log: %w", err)
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			msg, err := streams.Next(ctx, iter)
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

	agentsSub, err := s.serveAgents()
	if err != nil {
		return fmt.Errorf("scheduler: serve agents: %w", err)
	}
	defer func() { _ = agentsSub.Unsubscribe() }()
	microSvc, err := s.serveMicro()
	if err != nil {
		return err
	}
	defer func() { _ = microSvc.Stop() }()

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
				if s.agentWatchPaused.Load() {
					continue // tests: a watch that stopped delivering
				}
				if e.Key() == probeKey {
					continue // the scheduler's own write (lostAgents)
				}
				it := input{rev: e.Revision()}
				if d, ok := drainInput(e); ok {
					it = d
				} else if e.Operation() != jetstream.KeyValuePut {
					it.gone = e.Key()
				} else {
					a, ok := decodeHeartbeat(e)
					if !ok {
						s.log.Warn().Str("key", e.Key()).Msg("bad_agent_heartbeat")
						continue
					}
					it.agent = a
				}
				select {
				case in <- it:
				case <-ctx.Done():
					return
				}
			}
		}
	}()

	if s.cfg.forceLead {
		s.leading.Store(true)
	} else {
		leases, err := streams.ProvisionBucket(ctx, s.js, streams.LeasesBucketConfig(s.cfg.Streams, s.cfg.LeaseTTL))
		if err != nil {
			return fmt.Errorf("scheduler: leases bucket: %w", err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.lease(ctx, leases)
		}()
	}

	tick := time.NewTicker(s.cfg.Tick)
	defer tick.Stop()
	if caughtUp {
		s.once.Do(func() { close(s.ready) })
	}
	for {
		timed := false
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
			timed = true
		case <-s.poke:
			s.mu.Lock()
			s.st.dirty = true
			s.mu.Unlock()
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
			if s.leading.Load() {
				s.decide(ctx, timed)
			}
		}
	}
}

// decodeHeartbeat reads an agent's heartbeat from its entry in the agents'
// bucket; false when it is not one (or not under the agent's own key).
func decodeHeartbeat(e jetstream.KeyValueEntry) (*events.AgentInfo, bool) {
	var a events.AgentInfo
	if err := events.Unmarshal(e.Value(), &a); err != nil || !events.ValidToken(a.ID) || a.ID != e.Key() {
		return nil, false
	}
	return &a, true
}

// leaseKey is the scheduler leadership's key in the leases bucket.
const leaseKey = "scheduler"

// lease holds or waits for the leadership until ctx ends. The lease is a
// key created with Create (only when absent) and renewed with Update at
// the revision we wrote last; the bucket's TTL removes a lease no longer
// renewed. A renewal that fails is checked against the key (renew): the
// leader steps down when the key is another's or gone, or when it could
// not renew for so long that the lease may have expired.
//
// Leadership saves duplicate work; it is not what keeps placements
// right (the log's conditions are), so a leader that keeps leading a
// little longer than its lease on a slow network is harmless, and one
// that steps down for a renewal whose answer was only late leaves the
// cluster without placements until the lease expires.
func (s *Service) lease(ctx context.Context, kv jetstream.KeyValue) {
	every := s.cfg.LeaseTTL / 3
	t := time.NewTicker(every)
	defer t.Stop()
	val := []byte(s.cfg.InstanceID)
	var rev uint64
	var renewed time.Time // the start of the last renewal that succeeded
	// A released lease (deleted) is taken at once; an expired one (the
	// bucket's TTL leaves no marker) on the next try.
	var released <-chan jetstream.KeyValueEntry
	if w, err := kv.Watch(ctx, leaseKey, jetstream.UpdatesOnly()); err == nil {
		defer func() { _ = w.Stop() }()
		released = w.Updates()
	}
	for {
		start := time.Now()
		if s.leading.Load() {
			r, fresh, err := s.renew(ctx, kv, val, rev, renewed, every)
			switch {
			case err != nil:
				if ctx.Err() == nil {
					s.leading.Store(false)
					s.log.Warn().Err(err).Msg("lease_lost")
				}
			case fresh:
				rev, renewed = r, start
			case r != 0:
				rev = r
			}
		} else if r, err := s.create(ctx, kv, val, every); err == nil {
			rev, renewed = r, start
			s.leading.Store(true)
			s.log.Info().Msg("lease_acquired")
			select {
			case s.poke <- struct{}{}:
			default:
			}
		}
	wait:
		for {
			select {
			case <-ctx.Done():
				if s.leading.Swap(false) {
					s.release(kv, rev)
				}
				return
			case <-t.C:
				break wait
			case e := <-released:
				if e != nil && e.Operation() != jetstream.KeyValuePut && !s.leading.Load() {
					break wait
				}
			}
		}
	}
}

// create takes the lease if nobody holds it, each try bounded by timeout.
func (s *Service) create(ctx context.Context, kv jetstream.KeyValue, val []byte, timeout time.Duration) (uint64, error) {
	cctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	return kv.Create(cctx, leaseKey, val)
}

// renew renews the lease held at revision rev, last renewed (successfully)
// at renewed, each call to the server bounded by timeout. It returns the
// lease's revision and whether this renewal was written now (fresh); an
// error when the leader must step down: the key is another's or gone, or
// no renewal succeeded for so long that the lease may have expired. A
// renewal refused for its revision finds the key still ours when an
// earlier renewal was applied but its answer lost: the key's revision is
// then ours, not fresh. No answer at all leads on (0, not fresh) while the
// last renewal holds.
func (s *Service) renew(ctx context.Context, kv jetstream.KeyValue, val []byte, rev uint64, renewed time.Time, timeout time.Duration) (uint64, bool, error) {
	uctx, cancel := context.WithTimeout(ctx, timeout)
	r, err := kv.Update(uctx, leaseKey, val, rev)
	cancel()
	if err == nil {
		return r, true, nil
	}
	gctx, cancel := context.WithTimeout(ctx, timeout)
	e, gerr := kv.Get(gctx, leaseKey)
	cancel()
	switch {
	case gerr == nil && string(e.Value()) == string(val):
		s.log.Info().Err(err).Msg("lease_renewal_recovered")
		return e.Revision(), false, nil
	case gerr == nil || errors.Is(gerr, jetstream.ErrKeyNotFound) || errors.Is(gerr, jetstream.ErrKeyDeleted):
		return 0, false, fmt.Errorf("lease taken or expired: %w", err)
	case time.Since(renewed) < s.cfg.LeaseTTL-s.cfg.LeaseTTL/3:
		s.log.Warn().Err(err).Msg("lease_renewal_unanswered")
		return 0, false, nil
	}
	return 0, false, fmt.Errorf("lease not renewed for %s: %w", time.Since(renewed).Round(time.Millisecond), err)
}

// release deletes our lease so that a standby takes over at once. A
// renewal cut short may have moved the revision: then the lease is
// deleted at its current revision if it is still ours.
func (s *Service) release(kv jetstream.KeyValue, rev uint64) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	err := kv.Delete(ctx, leaseKey, jetstream.LastRevision(rev))
	if err != nil {
		if e, gerr := kv.Get(ctx, leaseKey); gerr == nil && string(e.Value()) == s.cfg.InstanceID {
			err = kv.Delete(ctx, leaseKey, jetstream.LastRevision(e.Revision()))
		}
	}
	if err != nil {
		s.log.Warn().Err(err).Msg("lease_release")
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
		} else {
			s.st.agents[it.agent.ID].rev = it.rev
			s.st.agents[it.agent.ID].drained = s.drainedIDs[it.agent.ID]
		}
	case it.drainID != "":
		s.setDrained(it.drainID, it.drained)
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
			if sess := s.st.sessions[key(ev.AccessKey, ev.SessionID)]; sess != nil && events.NotFromPlacedAgent(sess.agentID, ev) {
				s.log.Warn().Str("event", string(ev.Name)).Str("agent_id", ev.AgentID).Str("placed_on", sess.agentID).
					Str("session_id", ev.SessionID).Uint64("seq", md.Sequence.Stream).Msg("event_from_wrong_agent_refused")
			}
			s.st.apply(ev, md.Sequence.Stream)
		}
		return md.NumPending == 0
	}
	return false
}

// Snapshot is a copy of what the scheduler believes, for tests and the
// operator: per agent, the slots it placed there.
type Snapshot struct {
	Pending int
	Placed  map[string]slots.Set // agent id → sum of placed slots
	// Reserved is, per agent, the sum of the live reservations (placements
	// announced on its ledger and not yet published).
	Reserved map[string]slots.Set
	Leader   bool
	// Refused counts the ledger entries and placements the log refused
	// (or that were not acknowledged) since the start; Committed the
	// placements it accepted.
	Refused, Committed int64
}

// Snapshot returns the current ledger.
func (s *Service) Snapshot() Snapshot {
	s.mu.Lock()
	defer s.mu.Unlock()
	snap := Snapshot{Pending: len(s.st.pending), Placed: map[string]slots.Set{}, Reserved: map[string]slots.Set{}, Leader: s.leading.Load(), Refused: s.refused.Load(), Committed: s.placed.Load()}
	for id, a := range s.st.agents {
		snap.Placed[id] = a.placed.Clone()
		if !a.reserved.IsZero() {
			snap.Reserved[id] = a.reserved.Clone()
		}
	}
	return snap
}
