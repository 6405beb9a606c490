// Package gateway admits session requests: it validates them, resolves
// image aliases, and publishes session_enqueued and terminate requests to
// the session log. It answers bai.api.<ak>.session.create and
// bai.api.<ak>.session.terminate.
package gateway

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/bai-sh/bai/pkg/events"
	"github.com/bai-sh/bai/pkg/events/streams"
	"github.com/bai-sh/bai/pkg/slots"
)

// ErrConfig wraps every configuration error.
var ErrConfig = errors.New("gateway: invalid config")

// DefaultImages is the alias table used when Config.Images is empty: each
// alias maps to a full image reference; a full reference maps to itself.
var DefaultImages = map[string]string{
	"python":               "python:3.11-debian12",
	"python3":              "python:3.11-debian12",
	"python:3":             "python:3.11-debian12",
	"python:3.11":          "python:3.11-debian12",
	"python:3.11-debian12": "python:3.11-debian12",
}

// Config configures a gateway.
type Config struct {
	// NC is the connection to NATS. Required.
	NC *nats.Conn
	// Log is the logger. Default: zerolog.Nop().
	Log zerolog.Logger
	// Images maps aliases and full references to full references: the
	// seed of the alias table (KV bucket ImagesBucket) when it is first
	// created. Default: DefaultImages.
	Images map[string]string
	// AdminAccessKey is the key with the admin role (image aliases).
	AdminAccessKey string
	// DefaultSlots fill the slots a request leaves out.
	// Default: cpu=1, mem=256m.
	DefaultSlots map[string]string
	// Domain, Group and ScalingGroup a session lands in. Default "default".
	Domain, Group, ScalingGroup string
	// Streams are the options of the streams it provisions. Default: zero.
	Streams streams.Options
	// IdleTimeout terminates a running session (reason idle-timeout) that
	// has run no code and written no output for this long. Default 30
	// minutes; negative: never. The resource policy of a session's key
	// overrides it when it sets an idle timeout, and may set a max
	// session lifetime (reason max-lifetime-exceeded).
	IdleTimeout time.Duration
	// MaxCreating bounds the creates handled at once; beyond it a create
	// is answered events.ErrBusy at once. Default: 256.
	MaxCreating int
	// Storage says why the server stores nothing now (its disk is full),
	// nil when it does: a request that would write to the log is then
	// answered events.ErrNoSpace with its words at once, rather than
	// after a publish that times out. The all-in-one server sets it from
	// its watch of the disk. Default: nil (never asked).
	Storage func() error
	// AgentMemory is how long an agent's capacity counts at admission
	// after its last heartbeat: a create that no agent of its scaling
	// group seen within it could ever hold (more cpu than the largest
	// has, a slot none offers) is refused; with no agent seen within it,
	// every create is admitted and waits. Default: DefaultAgentMemory
	// (an hour); negative: no such check.
	AgentMemory time.Duration
	// Metrics receives the gateway's collectors (metrics.go: admissions,
	// refusals by reason). Default: nil, no metrics.
	Metrics prometheus.Registerer
}

// Service is a running gateway.
type Service struct {
	cfg      Config
	log      zerolog.Logger
	defaults slots.Set
	js       jetstream.JetStream
	stream   jetstream.Stream
	ready    chan struct{}
	once     sync.Once
	quota    *quotas     // resource policies (quota.go)
	caps     *capacities // the agents' capacity (capacity.go)

	upMu    sync.Mutex
	upStore jetstream.ObjectStore

	imgMu    sync.RWMutex
	images   map[string]string // alias or full reference → full reference
	kvImages jetstream.KeyValue
	creating chan struct{} // one token per create in progress

	// Files out (download.go): one token per file request in progress.
	fileOnce sync.Once
	fileOps  chan struct{}
	fileWG   sync.WaitGroup
	metrics  *metrics // nil: no metrics
}

// New validates cfg and fills its defaults; it starts nothing.
func New(cfg Config) (*Service, error) {
	if cfg.NC == nil {
		return nil, fmt.Errorf("%w: NC is required", ErrConfig)
	}
	if len(cfg.Images) == 0 {
		cfg.Images = DefaultImages
	}
	if cfg.DefaultSlots == nil {
		cfg.DefaultSlots = map[string]string{"cpu": "1", "mem": "256m"}
	}
	if cfg.IdleTimeout == 0 {
		cfg.IdleTimeout = DefaultIdleTimeout
	}
	if cfg.AgentMemory == 0 {
		cfg.AgentMemory = DefaultAgentMemory
	}
	def, err := slots.ParseMap(cfg.DefaultSlots)
	if err != nil {
		return nil, fmt.Errorf("%w: default slots: %v", ErrConfig, err)
	}
	for _, p := range []*string{&cfg.Domain, &cfg.Group, &cfg.ScalingGroup} {
		if *p == "" {
			*p = "default"
		}
	}
	js, err := jetstream.New(cfg.NC)
	if err != nil {
		return nil, fmt.Errorf("%w: jetstream: %v", ErrConfig, err)
	}
	m, err := newMetrics(cfg.Metrics)
	if err != nil {
		return nil, fmt.Errorf("%w: metrics: %v", ErrConfig, err)
	}
	return &Service{
		metrics:  m,
		cfg:      cfg,
		log:      cfg.Log.With().Str("component", "gateway").Logger(),
		defaults: def,
		js:       js,
		ready:    make(chan struct{}),
		images:   map[string]string{},
		creating: make(chan struct{}, cmp.Or(max(cfg.MaxCreating, 0), 256)),
		caps:     newCapacities(cfg.AgentMemory),
	}, nil
}

// Ready is closed once the gateway answers requests.
func (s *Service) Ready() <-chan struct{} { return s.ready }

// setupRetry logs one retry of Run's set-up.
func (s *Service) setupRetry(attempt int, wait time.Duration, err error) {
	s.log.Warn().Err(err).Int("attempt", attempt).Dur("retry_in", wait).Msg("jetstream_not_ready_retrying")
}

// Run serves until ctx ends.
func (s *Service) Run(ctx context.Context) error {
	// A cluster electing, or a node coming back, answers JetStream
	// requests with 503 or not at all for a moment: the set-up is retried
	// (a log line per attempt) until it works or ctx ends; any other error (a
	// refusal, a disk) ends Run. The watches live on ctx, not on one attempt's.
	err := streams.RetryTransient(ctx, s.setupRetry, func(actx context.Context) error {
		if err := streams.Provision(actx, s.js, s.cfg.Streams); err != nil {
			return err
		}
		st, err := s.js.Stream(actx, streams.Sessions)
		if err != nil {
			return fmt.Errorf("gateway: session stream: %w", err)
		}
		s.stream = st
		s.quota, err = newQuotas(actx, s.cfg.NC, s.js, s.cfg.Streams.Replicas)
		return err
	})
	if err != nil {
		return err
	}
	if err := streams.RetryTransient(ctx, s.setupRetry, func(context.Context) error { return s.startImages(ctx) }); err != nil {
		return err
	}
	// The agents' capacity, known before the first create is answered.
	var watches sync.WaitGroup
	defer watches.Wait()
	wctx, stopWatches := context.WithCancel(ctx)
	defer stopWatches()
	if s.cfg.AgentMemory > 0 {
		err := streams.RetryTransient(ctx, s.setupRetry, func(context.Context) error { return s.caps.watch(wctx, s.js, &watches, s) })
		if err != nil {
			return err
		}
	}
	svc, err := micro.AddService(s.cfg.NC, micro.Config{
		Name:        "bai-gateway",
		Version:     "0.1.0",
		Description: "bai admission",
	})
	if err != nil {
		return fmt.Errorf("gateway: micro service: %w", err)
	}
	defer func() {
		// Every create in progress ends before Run returns.
		for range cap(s.creating) {
			s.creating <- struct{}{}
		}
	}()
	defer s.fileWG.Wait() // file requests in progress (download.go)
	defer svc.Stop()
	for op, h := range map[string]micro.HandlerFunc{
		events.OpSessionCreate:    s.handleCreate,
		events.OpSessionTerminate: s.handleTerminate,
		events.OpSessionExecute:   s.handleExecute,
		events.OpSessionUpload:    s.handleUpload,
		events.OpSessionDownload:  s.handleDownload,
		events.OpSessionFiles:     s.handleFiles,
		events.OpImageList:        s.handleImageList,
		events.OpImageAlias:       s.handleImageAlias,
		events.OpImageAdd:         s.handleImageAdd,
		events.OpAgentList:        s.handleAgentList,
		events.OpAgentDrain:       s.handleAgentDrain,
		events.OpAgentUndrain:     s.handleAgentUndrain,
		events.OpAdminHealth:      s.handleHealth,
	} {
		if err := svc.AddEndpoint(strings.ReplaceAll(op, ".", "_"), guard(s.log, h), micro.WithEndpointSubject(events.APIPattern(op))); err != nil {
			return fmt.Errorf("gateway: endpoint %s: %w", op, err)
		}
	}
	// The reaper runs even without a default idle timeout: a resource
	// policy may set one, or a max session lifetime.
	var reaper sync.WaitGroup
	r, err := s.startReaper(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return nil // stopped while starting: a clean stop
		}
		return err
	}
	reaper.Go(func() { r.run(ctx) })
	s.once.Do(func() { close(s.ready) })
	s.log.Info().Msg("gateway_ready")
	<-ctx.Done()
	reaper.Wait()
	return nil
}

// guard is every endpoint's first step: a request whose reply subject is
// not its requester's own inbox (events.RequestReplyAllowed: a tenant
// naming a JetStream API call, a KV key, another tenant's inbox or log
// as its reply) is refused without publishing anything, and logged.
func guard(log zerolog.Logger, h micro.HandlerFunc) micro.HandlerFunc {
	return func(req micro.Request) {
		if ak, ok := events.RequestReplyAllowed(req.Subject(), req.Reply()); !ok {
			log.Warn().Str("subject", clip(req.Subject())).Str("reply", clip(req.Reply())).Str("access_key", ak).
				Msg("reply_subject_refused")
			return
		}
		h(req)
	}
}

// respond answers req with v, or with err's code. An error answer has a
// JSON body too (events.ErrorBody): no answer is ever empty.
func respond(req micro.Request, v any, err error) {
	if err != nil {
		code := events.CodeOf(err)
		_ = req.Error(code, err.Error(), events.ErrorBody(code, err.Error()))
		return
	}
	_ = req.RespondJSON(v)
}

func callerKey(req micro.Request) (string, error) {
	ak, _, err := events.ParseAPISubject(req.Subject())
	if err != nil {
		return "", events.Errorf(events.ErrInvalid, "%v", err)
	}
	return ak, nil
}

// handleCreate handles up to MaxCreating creates at once, each in its own
// goroutine (the endpoint's callback is serial: one synchronous publish at
// a time would bound admission at one JetStream round trip per session);
// beyond that it answers busy, retry.
func (s *Service) handleCreate(req micro.Request) {
	select {
	case s.creating <- struct{}{}:
	default:
		err := events.Errorf(events.ErrBusy, "too many sessions being created; retry")
		s.metrics.created(err)
		respond(req, nil, err)
		return
	}
	reply := req.Reply()
	go func() {
		defer func() { <-s.creating }()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		resp, err := s.create(ctx, req)
		s.metrics.created(err)
		s.replyTo(reply, resp, err)
	}()
}

// replyTo answers a request after its micro handler has returned: micro's
// request may not be touched then (it keeps its stats in it), so the
// answer goes straight to the reply subject, in micro's error format.
func (s *Service) replyTo(reply string, v any, err error) {
	if reply == "" {
		return
	}
	msg := &nats.Msg{Subject: reply, Header: nats.Header{}}
	if err == nil {
		msg.Data, err = events.Marshal(v)
	}
	if err != nil {
		code := events.CodeOf(err)
		msg.Header.Set(events.HeaderError, err.Error())
		msg.Header.Set(events.HeaderErrorCode, code)
		msg.Data = events.ErrorBody(code, err.Error())
	}
	if err := s.cfg.NC.PublishMsg(msg); err != nil {
		s.log.Warn().Err(err).Msg("reply_failed")
	}
}

func (s *Service) create(ctx context.Context, req micro.Request) (*events.CreateResponse, error) {
	ak, err := callerKey(req)
	if err != nil {
		return nil, err
	}
	var cr events.CreateRequest
	if !utf8.Valid(req.Data()) {
		// The JSON decoder would put U+FFFD in place of the bad bytes
		// and admit text the user never wrote.
		return nil, events.Errorf(events.ErrInvalid, "malformed create request: not UTF-8 text (a tag, name, variable or code holds bytes that are not UTF-8)")
	}
	if err := events.Unmarshal(req.Data(), &cr); err != nil {
		return nil, events.Errorf(events.ErrInvalid, "malformed create request: %v", err)
	}
	if cr.Owner != "" && cr.Owner != ak {
		if !s.isAdmin(ak) {
			return nil, events.Errorf(events.ErrForbidden, "only an admin may create a session for another access key")
		}
		if !events.ValidToken(cr.Owner) {
			return nil, events.Errorf(events.ErrInvalid, "invalid owner access key %q", clip(cr.Owner))
		}
		ak = cr.Owner
	}
	spec, err := s.admit(ak, &cr)
	if err != nil {
		return nil, err
	}
	if err := s.checkFiles(ctx, ak, spec.ID, spec.Run); err != nil {
		return nil, err
	}
	release, err := s.quota.admit(ctx, ak, spec)
	if err != nil {
		return nil, err
	}
	// What the quota ledger learns: the enqueue's sequence (0: none
	// stored), and whether that is known.
	var stored uint64
	sure := false
	defer func() { release(stored, sure) }()
	ev := &events.Event{
		V: events.Version, ID: events.NewID(), Name: events.EventEnqueued, Time: spec.CreatedAt,
		AccessKey: ak, SessionID: spec.ID, KernelID: spec.MainKernelID, Session: spec,
	}
	ack, err := s.publish(ctx, ev, "create."+ak+"."+spec.ID, true)
	if streams.IsWrongLastSequence(err) {
		sure = true
		return s.existing(ctx, &cr, spec)
	}
	if err != nil {
		s.log.Error().Err(err).Str("session_id", spec.ID).Msg("enqueue_failed")
		return nil, publishError(err, "could not enqueue session")
	}
	sure = true
	if !ack.Duplicate {
		stored = ack.Sequence
	}
	s.log.Debug().Str("session_id", spec.ID).Str("access_key", ak).Bool("duplicate", ack.Duplicate).Msg("session_enqueued")
	return &events.CreateResponse{SessionID: spec.ID, Name: spec.Name, Image: spec.Image, Duplicate: ack.Duplicate}, nil
}

// existing answers a create whose session id is taken: a repeat of the
// request that made it is the same session; anything else is a conflict.
func (s *Service) existing(ctx context.Context, cr *events.CreateRequest, spec *events.SessionSpec) (*events.CreateResponse, error) {
	subj, _ := events.SessionEventSubject(spec.AccessKey, spec.ID, events.EventEnqueued)
	raw, err := s.stream.GetLastMsgForSubject(ctx, subj)
	if err != nil {
		return nil, events.Errorf(events.ErrConflict, "session id %q already exists", spec.ID)
	}
	prev, err := events.Decode(raw.Subject, raw.Data)
	if err != nil || prev.Session.Image != spec.Image || (cr.Name != "" && prev.Session.Name != cr.Name) {
		return nil, events.Errorf(events.ErrConflict, "session id %q already exists", spec.ID)
	}
	return &events.CreateResponse{SessionID: spec.ID, Name: prev.Session.Name, Image: prev.Session.Image, Duplicate: true}, nil
}

// publish writes ev to the session log with msgID for deduplication; with
// mustBeFirst the log refuses it when the session already has any event.
// While the server stores nothing (Config.Storage) it publishes nothing
// and returns events.ErrNoSpace, as it does for a publish that failed then.
func (s *Service) publish(ctx context.Context, ev *events.Event, msgID string, mustBeFirst bool) (ack *jetstream.PubAck, err error) {
	if err := s.storageErr(); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil && !streams.IsWrongLastSequence(err) {
			if serr := s.storageErr(); serr != nil {
				err = serr
			}
		}
	}()
	var g streams.Guard
	if mustBeFirst {
		g = streams.OnSession(ev.AccessKey, ev.SessionID, 0)
	}
	return streams.Publish(ctx, s.js, ev, g, jetstream.WithMsgID(msgID), jetstream.WithExpectStream(streams.Sessions))
}

// storageErr is events.ErrNoSpace with the server's words while it stores
// nothing (Config.Storage); nil otherwise.
func (s *Service) storageErr() error {
	if s.cfg.Storage == nil {
		return nil
	}
	if err := s.cfg.Storage(); err != nil {
		return events.Errorf(events.ErrNoSpace, "%v", err)
	}
	return nil
}

// publishError is a failed publish's answer: out of disk space as it is,
// anything else an internal error that says what could not be done.
func publishError(err error, what string) error {
	if errors.Is(err, events.ErrNoSpace) {
		return err
	}
	return events.Errorf(events.ErrInternal, "%s: %v", what, err)
}

func (s *Service) handleTerminate(req micro.Request) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := s.terminate(ctx, req)
	respond(req, resp, err)
}

func (s *Service) terminate(ctx context.Context, req micro.Request) (*events.TerminateResponse, error) {
	ak, err := callerKey(req)
	if err != nil {
		return nil, err
	}
	var tr events.TerminateRequest
	if err := events.Unmarshal(req.Data(), &tr); err != nil {
		return nil, events.Errorf(events.ErrInvalid, "malformed terminate request: %v", err)
	}
	if !events.ValidToken(tr.SessionID) {
		return nil, events.Errorf(events.ErrInvalid, "invalid session id %q", tr.SessionID)
	}
	caller := ak
	if tr.AccessKey != "" && tr.AccessKey != ak {
		if !events.ValidToken(tr.AccessKey) {
			return nil, events.Errorf(events.ErrInvalid, "invalid access key %q", clip(tr.AccessKey))
		}
		if !s.isAdmin(ak) {
			s.log.Warn().Str("access_key", ak).Str("asked", tr.AccessKey).Msg("other_key_denied")
			return nil, events.Errorf(events.ErrForbidden, "access key %s is not an admin: only an admin may terminate another key's sessions", ak)
		}
		ak = tr.AccessKey
	}
	filter, _ := events.SessionFilter(ak, tr.SessionID)
	last, err := s.stream.GetLastMsgForSubject(ctx, filter)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, events.Errorf(events.ErrNotFound, "session %q not found", tr.SessionID)
	}
	if err != nil {
		return nil, events.Errorf(events.ErrInternal, "could not look up session %q: %v", tr.SessionID, err)
	}
	status := events.StatusNone
	if lastEv, err := events.Decode(last.Subject, last.Data); err == nil && !s.fromOtherAgent(ctx, lastEv) {
		status = lastEv.Status()
	}
	if status == events.StatusNone {
		// The last event moved no status (pending info, progress, a
		// request): the registry knows where the session stands.
		status = s.registryStatus(ctx, ak, tr.SessionID)
	}
	if status.Final() {
		return nil, events.Errorf(events.ErrConflict, "session %q is already %s", tr.SessionID, status)
	}
	ev := &events.Event{
		V: events.Version, ID: events.NewID(), Name: events.EventTerminateRequest, Time: time.Now().UTC(),
		AccessKey: ak, SessionID: tr.SessionID, Reason: events.ReasonUserRequested,
	}
	if caller != ak {
		ev.Message = "terminated by admin " + caller
	}
	if _, err := s.publish(ctx, ev, ev.ID, false); err != nil {
		return nil, publishError(err, "could not request termination")
	}
	return &events.TerminateResponse{SessionID: tr.SessionID, Status: status}, nil
}

// registryStatus asks the registry for a session's status; StatusNone
// when it cannot say.
func (s *Service) registryStatus(ctx context.Context, ak, sid string) events.Status {
	subj, err := events.ServiceAPISubject(ak, events.OpSessionGet)
	if err != nil {
		return events.StatusNone
	}
	data, _ := events.Marshal(events.GetRequest{Ref: sid})
	msg, err := s.cfg.NC.RequestWithContext(ctx, subj, data)
	if err != nil || events.ErrorFromHeader(map[string][]string(msg.Header)) != nil {
		return events.StatusNone
	}
	var info events.SessionInfo
	if events.Unmarshal(msg.Data, &info) != nil {
		return events.StatusNone
	}
	return info.Status
}
