package agent

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
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

// Errors of this package.
var (
	// ErrConfig: the Config is invalid.
	ErrConfig = errors.New("invalid agent config")
	// ErrImage: the runtime cannot run the image.
	ErrImage = errors.New("unsupported image")
)

// Config configures an agent.
type Config struct {
	// Streams are the options of the streams it provisions (replicas: 0
	// is streams.DefaultReplicas). Default: zero.
	Streams streams.Options
	// NC is the NATS connection. Required.
	NC *nats.Conn
	// WorkHeartbeat is how often the server tells a waiting work pull that
	// the work consumer is there; two missed and the agent looks again (a
	// NATS restart forgets the consumer without a word). 500ms to 30s;
	// default 5s.
	WorkHeartbeat time.Duration
	// Log is the logger. Default zerolog.Nop().
	Log zerolog.Logger
	// DataDir holds the state db (DataDir/agent.db) and the kernels' work
	// directories (DataDir/kernels/<kernel_id>, mode 0700). Required.
	DataDir string
	// ID is the agent id, a subject token. Default: the id stored in the
	// state db, else "agent-" + the host name made a token.
	ID string
	// ScalingGroup is the agent's scaling group. Default "default".
	ScalingGroup string
	// Capacity is the slots the agent offers ("cpu": "4", "mem": "8g").
	// Default: detected, cpu = runtime.NumCPU(), mem = MemTotal of
	// /proc/meminfo.
	Capacity map[string]string
	// HeartbeatInterval is how often the heartbeat is stored. Default 2s.
	HeartbeatInterval time.Duration
	// FoldStarts: a kernel start that reaches RUNNING within this puts
	// its steps (PREPARING, PREPARED, CREATING, kernel_started) on the log
	// folded into its session_started, one write instead of five; a
	// longer one publishes the steps so far at that point, and each later
	// one as it comes. Default 1s; negative: every step as it comes.
	FoldStarts time.Duration
	// Interpreters maps an image name prefix to the interpreter binary the
	// process runtime runs its code with; the longest matching prefix
	// wins. Default {"python:": "/usr/bin/python3" if it exists, else
	// python3 on PATH}.
	Interpreters map[string]string
	// Runtime runs the kernels. Default: the process runtime over
	// DataDir/kernels with Interpreters, sandboxed with Sandbox.
	Runtime Runtime
	// Sim, when Runtime is nil, chooses the sim runtime with these delays.
	Sim *SimConfig
	// Sandbox tunes the default process runtime's sandbox.
	Sandbox SandboxOptions
	// GPUs are the NVIDIA devices offered. Default: detected with
	// nvidia-smi (none without it). With devices, a detected Capacity gets
	// cuda.device and cuda.shares, and the default runtime gives kernels
	// their devices.
	GPUs []GPU
	// CUDASharesPerDevice is how many cuda.shares one device is. Default 1.
	CUDASharesPerDevice float64
	// Metrics receives the agent's collectors (metrics.go: output bytes,
	// kernels). Default: nil, no metrics.
	Metrics prometheus.Registerer
}

// Service is one agent.
type Service struct {
	cfg      Config
	log      zerolog.Logger
	id       string
	host     string
	capacity map[string]string
	rt       Runtime
	dbPath   string
	ready    chan struct{}
	running  atomic.Bool
	notes    []string // what the runtime could not set up
	// What the process runtime did to the host's cgroup2 mount, and why
	// it could not (ProcessRuntime.CgroupMount).
	cgroupMount    string
	cgroupMountErr error

	// Set by Run.
	js       jetstream.JetStream
	kv       jetstream.KeyValue
	st       *state
	epoch    uint64
	stopping atomic.Bool
	execs    sync.WaitGroup // execution goroutines

	// The work cursor's: the highest work sequence handed to the agent,
	// and those not done with yet (handed back for a retry, or a kernel
	// start still under way); see advance.
	curMu    sync.Mutex
	highest  uint64
	retrying map[uint64]struct{}
	// Kernel starts under way (startAsync), and their slots.
	starts     sync.WaitGroup
	startSlots *startSlots

	mu        sync.Mutex
	kernels   map[string]*kernel // by kernel id
	bySession map[string]*kernel // by access key + "/" + session id

	metrics *metrics // nil: no metrics (metrics.go)
}

// New validates cfg and fills its defaults. It starts nothing.
func New(cfg Config) (*Service, error) {
	if cfg.NC == nil {
		return nil, fmt.Errorf("%w: NC is required", ErrConfig)
	}
	if cfg.DataDir == "" {
		return nil, fmt.Errorf("%w: DataDir is required", ErrConfig)
	}
	if cfg.ScalingGroup == "" {
		cfg.ScalingGroup = "default"
	}
	if !events.ValidToken(cfg.ScalingGroup) {
		return nil, fmt.Errorf("%w: scaling group %q is not a token", ErrConfig, cfg.ScalingGroup)
	}
	if cfg.WorkHeartbeat == 0 {
		cfg.WorkHeartbeat = 5 * time.Second
	}
	if cfg.WorkHeartbeat < 500*time.Millisecond || cfg.WorkHeartbeat > 30*time.Second {
		return nil, fmt.Errorf("%w: WorkHeartbeat %v is not within 500ms-30s", ErrConfig, cfg.WorkHeartbeat)
	}
	if cfg.HeartbeatInterval <= 0 {
		cfg.HeartbeatInterval = 2 * time.Second
	}
	if cfg.FoldStarts == 0 {
		cfg.FoldStarts = time.Second
	}
	host, _ := os.Hostname()
	s := &Service{
		log:        cfg.Log,
		host:       host,
		dbPath:     filepath.Join(cfg.DataDir, "agent.db"),
		ready:      make(chan struct{}),
		kernels:    make(map[string]*kernel),
		bySession:  make(map[string]*kernel),
		retrying:   make(map[uint64]struct{}),
		startSlots: newStartSlots(startConcurrency, startsPerKey),
	}
	if cfg.ID == "" {
		id, err := localID(s.dbPath, host)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrConfig, err)
		}
		cfg.ID = id
	}
	if !events.ValidToken(cfg.ID) {
		return nil, fmt.Errorf("%w: agent id %q is not a token", ErrConfig, cfg.ID)
	}
	s.id = cfg.ID
	if cfg.GPUs == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		gpus, err := DetectGPUs(ctx)
		cancel()
		if err != nil {
			s.notes = append(s.notes, fmt.Sprintf("no GPUs: %v", err))
		}
		cfg.GPUs = gpus
	}
	var gpus *GPUAllocator
	if len(cfg.GPUs) > 0 {
		gpus = NewGPUAllocator(cfg.GPUs, cfg.CUDASharesPerDevice)
	}
	if cfg.Capacity == nil {
		c, err := detectCapacity()
		if err != nil {
			return nil, fmt.Errorf("%w: detect capacity: %v", ErrConfig, err)
		}
		for k, v := range gpus.Capacity() {
			c[k] = v
		}
		cfg.Capacity = c
	}
	capSet, err := slots.ParseMap(cfg.Capacity)
	if err != nil {
		return nil, fmt.Errorf("%w: capacity: %v", ErrConfig, err)
	}
	s.capacity = capSet.Map()
	if cfg.Runtime == nil && cfg.Sim != nil {
		cfg.Runtime = NewSimRuntime(*cfg.Sim)
	}
	if cfg.Runtime == nil {
		if cfg.Interpreters == nil {
			cfg.Interpreters = map[string]string{}
			if py := defaultPython(); py != "" {
				cfg.Interpreters["python:"] = py
			}
		}
		pr := NewProcessRuntime(filepath.Join(cfg.DataDir, "kernels"), cfg.Interpreters)
		s.notes = append(s.notes, pr.Sandbox(cfg.Sandbox)...)
		s.cgroupMount, s.cgroupMountErr = pr.CgroupMount()
		if gpus != nil {
			pr.SetGPUs(gpus)
		}
		cfg.Runtime = pr
	}
	s.rt = cfg.Runtime
	s.cfg = cfg
	s.log = cfg.Log.With().Str("component", "agent").Str("agent_id", s.id).Logger()
	if s.metrics, err = s.newMetrics(cfg.Metrics); err != nil {
		return nil, fmt.Errorf("%w: metrics: %v", ErrConfig, err)
	}
	return s, nil
}

// ID is the agent's id.
func (s *Service) ID() string { return s.id }

// Ready is closed once the agent consumes its work and its first heartbeat
// is stored.
func (s *Service) Ready() <-chan struct{} { return s.ready }

// setupRetry logs one retry of Run's set-up.
func (s *Service) setupRetry(attempt int, wait time.Duration, err error) {
	s.log.Warn().Err(err).Int("attempt", attempt).Dur("retry_in", wait).Msg("jetstream_not_ready_retrying")
}

// Run serves until ctx ends, then shuts down: it stops consuming, kills
// the running executions (publishing their exit), waits for them, deletes
// its heartbeat and closes its state db. It returns nil on a clean ctx
// cancel. Run may be called once.
func (s *Service) Run(ctx context.Context) error {
	if !s.running.CompareAndSwap(false, true) {
		return errors.New("agent: Run called twice")
	}
	js, err := jetstream.New(s.cfg.NC,
		jetstream.WithPublishAsyncMaxPending(4096),
		jetstream.WithPublishAsyncTimeout(30*time.Second))
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	s.js = js
	// A cluster electing, or a node coming back, answers JetStream
	// requests with 503 or not at all for a moment: each step of the
	// set-up that asks NATS is retried (a log line per attempt) until it
	// works or ctx ends; any other error (a refusal, a disk) ends Run.
	if err := streams.RetryTransient(ctx, s.setupRetry, func(ctx context.Context) error {
		return streams.Provision(ctx, js, s.cfg.Streams)
	}); err != nil {
		return err
	}
	if err := os.MkdirAll(s.cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("create data dir: %w", err)
	}
	st, err := openState(s.dbPath, s.cfg.Sim != nil && s.cfg.Sim.StateNoSync, s.log)
	if err != nil {
		return err
	}
	s.st = st
	defer func() {
		if err := st.close(); err != nil {
			s.log.Error().Err(err).Msg("close_state_db")
		}
	}()
	if s.epoch, err = st.start(s.id); err != nil {
		return err
	}
	if err := streams.RetryTransient(ctx, s.setupRetry, func(ctx context.Context) (err error) {
		if s.kv, err = js.KeyValue(ctx, streams.Agents); err != nil {
			return fmt.Errorf("agents bucket: %w", err)
		}
		return nil
	}); err != nil {
		return err
	}
	if err := s.epochAfterHeartbeat(ctx); err != nil {
		return err
	}
	if _, err := st.loadWork(); err != nil {
		return err
	}
	s.log = s.log.With().Uint64("epoch", s.epoch).Logger()
	for _, n := range s.notes {
		s.log.Warn().Str("note", n).Msg("runtime_note")
	}
	if s.cgroupMount != "" {
		s.log.Info().Str("change", s.cgroupMount).Msg("cgroup_mount_changed")
	}
	if s.cgroupMountErr != nil {
		s.log.Warn().Err(s.cgroupMountErr).Str("effect", "an execution into an idle agent may wait an RCU grace period (5-16 ms) to join its cgroups").Msg("cgroup_favordynmods_not_set")
	}
	if err := st.pruneGone(time.Now().Add(-goneKeep)); err != nil {
		s.log.Warn().Err(err).Msg("prune_terminated_kernels")
	}
	var cons jetstream.Consumer
	if err := streams.RetryTransient(ctx, s.setupRetry, func(ctx context.Context) (err error) {
		cons, err = s.consumer(ctx)
		return err
	}); err != nil {
		return err
	}

	// From here on work may have started: every exit goes through shutdown.
	work := context.WithoutCancel(ctx)
	if pr, ok := s.rt.(pullReporter); ok {
		pr.ReportPulls(s.reportPull(work))
	}
	var loops sync.WaitGroup
	err = s.reconcile(work)
	if err == nil {
		if err = s.heartbeat(ctx); err != nil && ctx.Err() != nil {
			err = nil // stopped while starting: a clean stop (shutdown below)
		}
	}
	var it jetstream.MessagesContext
	if err == nil {
		it, err = s.messages(cons)
		if err != nil {
			err = fmt.Errorf("consume agent work: %w", err)
		}
	}
	if err == nil {
		if err = s.serveFiles(ctx, &loops); err != nil { // bai download, bai ls (downloads.go)
			it.Stop()
		}
	}
	if err == nil {
		loops.Go(func() { s.dispatch(ctx, work, it) })
		loops.Go(func() { s.heartbeats(ctx) })
		if m, merr := s.serveMicro(); merr != nil {
			s.log.Warn().Err(merr).Msg("micro_service_failed")
		} else {
			defer func() { _ = m.Stop() }()
		}
		s.log.Info().Str("runtime", s.rt.Name()).Interface("capacity", s.capacity).Msg("agent_ready")
		close(s.ready)
		<-ctx.Done()
	}
	loops.Wait()
	s.shutdown(work)
	return err
}

// workAckWait is how long the server waits for the ack of a work message
// before it hands the message again (a long start says it is in
// progress).
const workAckWait = time.Minute

// consumer creates or resumes the agent's durable work consumer.
//
// The consumer keeps its state in the server's memory: 1,000 agents' work
// consumers writing their state files were a quarter of the server's
// time. What a NATS restart forgets the agent knows: its work cursor
// (state.handled), from which a missing consumer is made again.
//
// Work an agent before this one was handed but never acknowledged (it was
// killed) is handed again at once rather than after the ack wait: the
// consumer is made again from the first unacknowledged message (the
// handlers ignore the duplicates this may give).
func (s *Service) consumer(ctx context.Context) (jetstream.Consumer, error) {
	name := "bai-agent-" + s.id
	filter, err := events.AgentQueueSubject(s.id)
	if err != nil {
		return nil, err
	}
	cfg := jetstream.ConsumerConfig{
		Durable:       name,
		Description:   "work addressed to agent " + s.id,
		FilterSubject: filter,
		AckPolicy:     jetstream.AckExplicitPolicy,
		DeliverPolicy: jetstream.DeliverNewPolicy,
		AckWait:       workAckWait,
		MaxAckPending: 1024,
		MemoryStorage: true,
	}
	queue, err := s.js.Stream(ctx, streams.Work)
	if err != nil {
		return nil, fmt.Errorf("work queue: %w", err)
	}
	incarnation := uint64(queue.CachedInfo().Created.UnixNano())
	cons, err := s.js.Consumer(ctx, streams.Work, name)
	switch {
	case err == nil:
		info := cons.CachedInfo()
		if info.NumAckPending == 0 {
			return cons, s.started(cons, incarnation)
		}
		// The resume point first: a crash between the delete and the
		// creation must not lose the work in between.
		seq := info.AckFloor.Stream + 1
		if err := s.st.setResumeSeq(seq); err != nil {
			return nil, err
		}
		if err := s.js.DeleteConsumer(ctx, streams.Work, name); err != nil {
			return nil, fmt.Errorf("reset agent consumer %s: %w", name, err)
		}
		s.log.Info().Int("unacked", info.NumAckPending).Msg("work_of_the_agent_before_handed_again")
		cfg.DeliverPolicy = jetstream.DeliverByStartSequencePolicy
		cfg.OptStartSeq = seq
	case errors.Is(err, jetstream.ErrConsumerNotFound):
		seq, err := s.st.resumeSeq()
		if err != nil {
			return nil, err
		}
		known, stream := s.st.knowsWork()
		switch h := s.st.handled.Load(); {
		case known && stream != 0 && stream != incarnation:
			// The work queue was made again (its NATS store lost): the
			// cursor counted in the old one; all of the new one is new.
			s.log.Warn().Uint64("cursor", h).Msg("work_queue_made_again: its work from the start")
			cfg.DeliverPolicy, seq = jetstream.DeliverAllPolicy, 0
		case known && (seq == 0 || h+1 < seq):
			// The server forgot the consumer (a restart): from the cursor.
			seq = h + 1
		}
		if seq > 0 {
			// A reset cut short by a crash, or the cursor.
			cfg.DeliverPolicy = jetstream.DeliverByStartSequencePolicy
			cfg.OptStartSeq = seq
		}
	default:
		return nil, fmt.Errorf("agent consumer %s: %w", name, err)
	}
	cons, err = s.js.CreateConsumer(ctx, streams.Work, cfg)
	if err != nil {
		return nil, fmt.Errorf("create agent consumer %s: %w", name, err)
	}
	return cons, s.started(cons, incarnation)
}

// started settles the state once the work consumer is made: no reset in
// progress, and a cursor in this incarnation of the work queue. A new
// agent's cursor starts where its consumer does, saved before its first
// heartbeat, so before anything can be placed on it.
func (s *Service) started(cons jetstream.Consumer, incarnation uint64) error {
	if known, stream := s.st.knowsWork(); !known || stream != incarnation {
		if err := s.st.resetWork(cons.CachedInfo().AckFloor.Stream, incarnation); err != nil {
			return err
		}
	}
	return s.st.setResumeSeq(0)
}

// epochAfterHeartbeat makes the epoch greater than the one of the
// heartbeat the bucket still holds for this agent id: a state db lost or
// reset starts counting from 1 again, and the scheduler tells a new
// incarnation by its epoch (it sends a kernel_check for every session
// placed here under another one; see onKernelCheck). A heartbeat that
// cannot be read is no reason not to start: logged.
func (s *Service) epochAfterHeartbeat(ctx context.Context) error {
	gctx, cancel := context.WithTimeout(ctx, publishTimeout)
	defer cancel()
	e, err := s.kv.Get(gctx, s.id)
	if err != nil {
		if !errors.Is(err, jetstream.ErrKeyNotFound) && !errors.Is(err, jetstream.ErrKeyDeleted) {
			s.log.Warn().Err(err).Msg("read_the_last_heartbeat: epoch from the state db alone")
		}
		return nil
	}
	var last events.AgentInfo
	if err := events.Unmarshal(e.Value(), &last); err != nil || last.Epoch < s.epoch {
		return nil
	}
	epoch, err := s.st.raiseEpoch(last.Epoch + 1)
	if err != nil {
		return err
	}
	s.log.Warn().Uint64("state_epoch", s.epoch).Uint64("epoch", epoch).
		Msg("agent_state_behind_heartbeat: epoch raised past it (the state db was lost or reset)")
	s.epoch = epoch
	return nil
}

// heartbeat stores the agent's heartbeat once.
func (s *Service) heartbeat(ctx context.Context) error {
	data, err := jsonMarshal(events.AgentInfo{
		V:            events.Version,
		ID:           s.id,
		Epoch:        s.epoch,
		Host:         s.host,
		Runtime:      s.rt.Name(),
		ScalingGroup: s.cfg.ScalingGroup,
		Capacity:     s.capacity,
		Heartbeat:    time.Now().UTC(),
	})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, publishTimeout)
	defer cancel()
	if _, err := s.kv.Put(ctx, s.id, data); err != nil {
		return fmt.Errorf("store heartbeat of agent %s: %w", s.id, err)
	}
	return nil
}

// cursorSaveEvery is how often the heartbeat loop saves a work cursor that
// moved without a kernel write.
const cursorSaveEvery = time.Minute

// heartbeats stores the heartbeat every HeartbeatInterval until ctx ends,
// and at once after each reconnect: an agent whose NATS node stopped
// answering is silent for the time its connection takes to be found
// stale and move to another node (svcflags.PingInterval), not for that
// and a tick more.
func (s *Service) heartbeats(ctx context.Context) {
	t := time.NewTicker(s.cfg.HeartbeatInterval)
	defer t.Stop()
	var reconnected chan nats.Status // nil: never ready
	if s.cfg.NC != nil {
		reconnected = s.cfg.NC.StatusChanged(nats.CONNECTED)
		defer s.cfg.NC.RemoveStatusListener(reconnected)
	}
	beat := func() {
		if err := s.heartbeat(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn().Err(err).Msg("heartbeat")
		}
	}
	saved := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-reconnected:
			beat()
		case <-t.C:
			beat()
			// The cursor is saved with every kernel write; this saves,
			// now and then, what moved it without one (the last
			// placement's end, an execution). A cursor behind hands
			// some work again after a NATS restart, nothing worse.
			if time.Since(saved) >= cursorSaveEvery {
				saved = time.Now()
				if err := s.st.saveWork(); err != nil {
					s.log.Warn().Err(err).Msg("save_work_cursor")
				}
			}
		}
	}
}

// shutdown kills the running executions, waits for them and deletes the
// heartbeat. The consumer is stopped already.
func (s *Service) shutdown(ctx context.Context) {
	s.stopping.Store(true)
	s.mu.Lock()
	ks := make([]*kernel, 0, len(s.kernels))
	for _, k := range s.kernels {
		ks = append(ks, k)
	}
	s.mu.Unlock()
	for _, k := range ks {
		k.killAll(s.log)
	}
	s.execs.Wait()
	if err := s.st.saveWork(); err != nil {
		s.log.Warn().Err(err).Msg("save_work_cursor")
	}
	// Kernels stay for the next start to adopt (ProcessRuntime.Detach).
	if d, ok := s.rt.(interface{ Detach() error }); ok {
		if err := d.Detach(); err != nil {
			s.log.Warn().Err(err).Msg("runtime_detach")
		}
	}
	if s.kv != nil {
		dctx, cancel := context.WithTimeout(ctx, publishTimeout)
		defer cancel()
		if err := s.kv.Delete(dctx, s.id); err != nil {
			s.log.Warn().Err(err).Msg("delete_heartbeat")
		}
	}
	s.log.Info().Msg("agent_stopped")
}

// tokenize turns s into a subject token of at most n characters.
func tokenize(s string, n int) string {
	b := []byte(s)
	for i, c := range b {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-', c == '_':
		default:
			b[i] = '-'
		}
	}
	if len(b) > n {
		b = b[:n]
	}
	if len(b) == 0 {
		return "host"
	}
	return string(b)
}

// detectCapacity is the host's CPU count and memory.
func detectCapacity() (map[string]string, error) {
	c := map[string]string{"cpu": strconv.Itoa(runtime.NumCPU())}
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) >= 2 && fields[0] == "MemTotal:" {
			kb, err := strconv.ParseUint(fields[1], 10, 64)
			if err != nil {
				return nil, fmt.Errorf("MemTotal %q: %w", fields[1], err)
			}
			c["mem"] = strconv.FormatUint(kb, 10) + "k"
			return c, sc.Err()
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return nil, errors.New("no MemTotal in /proc/meminfo")
}

// defaultPython is /usr/bin/python3 if it exists, else python3 on PATH.
func defaultPython() string {
	if _, err := os.Stat("/usr/bin/python3"); err == nil {
		return "/usr/bin/python3"
	}
	p, _ := exec.LookPath("python3")
	return p
}
