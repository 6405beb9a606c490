package agent

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/bai-sh/bai/pkg/events"
	"github.com/bai-sh/bai/pkg/events/streams"
)

// Publishing: each try's timeout and how many tries.
const (
	publishTimeout = 5 * time.Second
	publishTries   = 4
)

// kernel is one kernel the agent has.
type kernel struct {
	spec *events.SessionSpec
	log  zerolog.Logger

	// life orders the lifecycle steps of the kernel: start, terminate and
	// a batch task's end.
	life sync.Mutex

	// ended: the session is final already (a cancel, or a kill order of
	// the scheduler after it declared this agent lost): what the kernel
	// still writes is not published.
	ended atomic.Bool

	mu      sync.Mutex
	phase   string
	closing bool // terminating: no new executions
	procs   map[string]Process
	// limitHit is the last limit an execution hit ("oom-killed", ...).
	limitHit string
	runs     sync.WaitGroup // running executions; Add under mu, only while !closing
}

func newKernel(spec *events.SessionSpec, phase string, log zerolog.Logger) *kernel {
	return &kernel{
		spec:  spec,
		phase: phase,
		procs: make(map[string]Process),
		log: log.With().Str("session_id", spec.ID).Str("kernel_id", spec.MainKernelID).
			Str("access_key", spec.AccessKey).Logger(),
	}
}

// killAll kills every running execution of the kernel.
func (k *kernel) killAll(log zerolog.Logger) {
	k.mu.Lock()
	procs := make([]Process, 0, len(k.procs))
	for _, p := range k.procs {
		procs = append(procs, p)
	}
	k.mu.Unlock()
	for _, p := range procs {
		if err := p.Kill(); err != nil {
			log.Warn().Err(err).Msg("kill execution")
		}
	}
}

func sessionKey(ak, sid string) string { return ak + "/" + sid }

func (s *Service) addKernel(k *kernel) {
	s.mu.Lock()
	s.kernels[k.spec.MainKernelID] = k
	s.bySession[sessionKey(k.spec.AccessKey, k.spec.ID)] = k
	s.mu.Unlock()
}

func (s *Service) dropKernel(k *kernel) {
	s.mu.Lock()
	if s.kernels[k.spec.MainKernelID] == k {
		delete(s.kernels, k.spec.MainKernelID)
	}
	key := sessionKey(k.spec.AccessKey, k.spec.ID)
	if s.bySession[key] == k {
		delete(s.bySession, key)
	}
	s.mu.Unlock()
}

// lookup finds the kernel an event is about: by kernel id, else by session.
func (s *Service) lookup(e *events.Event) *kernel {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e.KernelID != "" {
		if k := s.kernels[e.KernelID]; k != nil {
			return k
		}
	}
	return s.bySession[sessionKey(e.AccessKey, e.SessionID)]
}

// dispatch handles the agent's work in log order until ctx ends; work is
// the context the handlers run under. When the iterator fails (the
// consumer was deleted, say) it is made again.
func (s *Service) dispatch(ctx, work context.Context, it jetstream.MessagesContext) {
	defer func() { s.release(it) }()
	for {
		msg, err := it.Next(jetstream.NextContext(ctx))
		if ctx.Err() != nil {
			if err == nil {
				s.nak(msg)
			}
			return
		}
		if err == nil {
			s.advance(msg, s.handle(work, msg))
			continue
		}
		s.log.Error().Err(err).Msg("agent work consumer failed")
		it.Stop()
		for {
			if pause(ctx, time.Second) != nil {
				return
			}
			cons, err := s.consumer(ctx)
			if err == nil {
				it, err = s.messages(cons)
			}
			if err == nil {
				break
			}
			s.log.Error().Err(err).Msg("resume agent work consumer")
		}
	}
}

// messages iterates over the work consumer's messages. A missed heartbeat
// (Config.WorkHeartbeat) is an error, upon which dispatch looks for the
// consumer again: a NATS restart forgets it (it lives in the server's
// memory) without a word to the pull.
func (s *Service) messages(cons jetstream.Consumer) (jetstream.MessagesContext, error) {
	return cons.Messages(jetstream.PullMaxMessages(16), jetstream.PullHeartbeat(s.cfg.WorkHeartbeat),
		jetstream.WithMessagesErrOnMissingHeartbeat(true))
}

// release stops the iterator and hands back the work it had buffered, so
// that the next start gets it at once rather than after the ack wait.
func (s *Service) release(it jetstream.MessagesContext) {
	it.Drain()
	for {
		msg, err := it.Next(jetstream.NextMaxWait(time.Second))
		if err != nil {
			return
		}
		s.nak(msg)
	}
}

func (s *Service) nak(msg jetstream.Msg) {
	if err := msg.Nak(); err != nil {
		s.log.Warn().Err(err).Msg("nak work message")
	}
}

// advance moves the work cursor past msg once it is done with (handled or
// refused), never past a message handed back for a retry.
func (s *Service) advance(msg jetstream.Msg, done bool) {
	md, err := msg.Metadata()
	if err != nil {
		return
	}
	seq := md.Sequence.Stream
	if done {
		delete(s.retrying, seq)
	} else {
		s.retrying[seq] = struct{}{}
	}
	s.highest = max(s.highest, seq)
	cursor := s.highest
	for r := range s.retrying {
		cursor = min(cursor, r-1)
	}
	if cursor > s.st.handled.Load() {
		s.st.handled.Store(cursor)
	}
}

// handle acts on one work message and acknowledges it; a transient failure
// naks it for redelivery. It reports whether the message is done with.
func (s *Service) handle(ctx context.Context, msg jetstream.Msg) bool {
	subj, err := events.WorkOrigin(msg.Headers().Get(events.WorkSourceHeader), s.id)
	var e *events.Event
	if err == nil {
		e, err = events.Decode(subj, msg.Data())
	}
	if err != nil {
		s.log.Warn().Err(err).Str("subject", subj).Msg("bad work message")
		if err := msg.Term(); err != nil {
			s.log.Warn().Err(err).Msg("terminate bad work message")
		}
		return true
	}
	log := s.log.With().Str("event", string(e.Name)).Str("event_id", e.ID).
		Str("session_id", e.SessionID).Logger()
	switch e.Name {
	case events.EventScheduled:
		err = s.onScheduled(ctx, e)
	case events.EventExecuteRequest:
		err = s.onExecute(ctx, e)
	case events.EventTerminating:
		err = s.onTerminating(ctx, e)
	case events.EventCancelled:
		err = s.onCancelled(ctx, e)
	case events.EventKernelCheck:
		err = s.onKernelCheck(ctx, e)
	default:
		log.Debug().Msg("ignored work message")
	}
	if errors.Is(err, errPermanent) {
		log.Warn().Err(err).Msg("refused work message")
		if err := msg.Term(); err != nil {
			log.Warn().Err(err).Msg("terminate work message")
		}
		return true
	}
	if err != nil {
		log.Error().Err(err).Msg("handle work message")
		if err := msg.NakWithDelay(time.Second); err != nil {
			log.Warn().Err(err).Msg("nak work message")
		}
		return false
	}
	// No round trip: an ack lost on the way hands the work again after
	// the ack wait, which the handlers absorb as they absorb any
	// redelivery.
	if err := msg.Ack(); err != nil {
		log.Warn().Err(err).Msg("ack work message")
	}
	return true
}

// errPermanent marks a work message that no retry can make right.
var errPermanent = errors.New("unusable work message")

// onScheduled starts the placed session's kernel, once per kernel id.
func (s *Service) onScheduled(ctx context.Context, e *events.Event) error {
	spec := e.Session
	if spec.ID != e.SessionID || spec.AccessKey != e.AccessKey || !events.ValidToken(spec.MainKernelID) {
		return fmt.Errorf("%w: session_scheduled with a bad session spec", errPermanent)
	}
	s.mu.Lock()
	k := s.kernels[spec.MainKernelID]
	s.mu.Unlock()
	if k != nil {
		k.mu.Lock()
		starting := k.phase == phaseStarting && !k.closing
		k.mu.Unlock()
		if !starting {
			return nil // a duplicate
		}
		// An earlier try failed half way: finish it.
		return s.start(ctx, k)
	}
	known, err := s.st.known(spec.MainKernelID)
	if err != nil {
		return err
	}
	if known {
		s.log.Info().Str("kernel_id", spec.MainKernelID).Msg("duplicate placement ignored")
		return nil
	}
	// Nothing is written before the kernel runs: its record is written
	// once, with the RUNNING phase and the initial runs (start). A crash
	// before that leaves no record, and the restarted agent destroys what
	// the runtime made for the kernel (reconcile's Reap) before it takes
	// any work; the placement, never acknowledged, comes again and starts
	// the kernel afresh. So still one kernel per kernel id, and initial
	// runs, recorded only with the record, run at most once; and a start
	// costs one state commit, not two.
	k = newKernel(spec, phaseStarting, s.log)
	s.addKernel(k)
	return s.start(ctx, k)
}

// start walks a kernel from its placement to RUNNING, then starts its
// initial executions. A step already done is done again
// harmlessly (the projections absorb duplicate events).
func (s *Service) start(ctx context.Context, k *kernel) error {
	k.life.Lock()
	defer k.life.Unlock()
	k.mu.Lock()
	closing := k.closing
	k.mu.Unlock()
	if closing {
		return nil
	}
	spec := k.spec
	// The lifecycle events go out asynchronously, in order on the agent's
	// one connection, and every one is acknowledged by the log before
	// start returns (and so before the work message is acked): a crash
	// before then redelivers the placement.
	var b eventBatch
	s.publishAsync(&b, k, events.EventPreparing)
	if err := s.rt.Prepare(ctx, spec); err != nil {
		if err := s.waitBatch(ctx, &b); err != nil {
			return err
		}
		return s.failStart(ctx, k, err)
	}
	s.publishAsync(&b, k, events.EventPrepared)
	s.publishAsync(&b, k, events.EventCreating)
	if err := s.rt.Create(ctx, spec); err != nil {
		if err := s.waitBatch(ctx, &b); err != nil {
			return err
		}
		return s.failStart(ctx, k, err)
	}
	crashAt("after-create")
	s.publishAsync(&b, k, events.EventKernelStarted)
	s.publishAsync(&b, k, events.EventStarted)
	if err := s.waitBatch(ctx, &b); err != nil {
		return err
	}
	// The initial runs are recorded with the phase, in one write: they
	// run at most once, as any run.
	var initial []events.RunSpec
	if spec.Run != nil {
		initial = append(initial, *spec.Run)
	}
	if spec.Type == events.TypeBatch && spec.StartupCommand != "" {
		initial = append(initial, events.RunSpec{ID: events.StartupRunID, Exec: spec.StartupCommand})
	}
	ids := make([]string, len(initial))
	for i, r := range initial {
		ids[i] = r.ID
	}
	added, err := s.st.putKernelRuns(kernelRecord{Spec: *spec, Phase: phaseRunning, CreatedAt: time.Now().UTC()}, ids...)
	if err != nil {
		return err
	}
	k.mu.Lock()
	k.phase = phaseRunning
	k.mu.Unlock()
	k.log.Info().Msg("kernel started")
	var runs []events.RunSpec
	for i, r := range initial {
		if added[i] {
			runs = append(runs, r)
		} else {
			k.log.Info().Str("run_id", r.ID).Msg("duplicate run ignored")
		}
	}
	if len(runs) > 0 {
		s.execs.Go(func() { s.runInitial(ctx, k, runs) })
	}
	return nil
}

// pullReporter is a runtime that reports its image pulls: Prepare calls
// report with -1 when a pull starts, then with the percent done, from
// Prepare's own goroutine.
type pullReporter interface {
	ReportPulls(report func(k *events.SessionSpec, progress int))
}

// reportPull publishes PULLING, then kernel_pull_progress events. A
// failed publish is logged: progress is advisory.
func (s *Service) reportPull(ctx context.Context) func(*events.SessionSpec, int) {
	return func(spec *events.SessionSpec, progress int) {
		s.mu.Lock()
		k := s.kernels[spec.MainKernelID]
		s.mu.Unlock()
		if k == nil {
			return
		}
		var err error
		if progress < 0 {
			err = s.publish(ctx, k, events.EventPulling, nil)
		} else {
			err = s.publish(ctx, k, events.EventPullProgress, func(e *events.Event) { e.Progress = &progress })
		}
		if err != nil {
			k.log.Warn().Err(err).Msg("publish pull progress")
		}
	}
}

// failStart reports a kernel that could not start and forgets it.
func (s *Service) failStart(ctx context.Context, k *kernel, cause error) error {
	k.log.Warn().Err(cause).Msg("kernel failed to start")
	if err := s.rt.Destroy(ctx, k.spec); err != nil {
		k.log.Warn().Err(err).Msg("destroy kernel")
	}
	msg := cause.Error()
	for _, n := range []events.Name{events.EventFailure, events.EventError, events.EventTerminated} {
		if err := s.publish(ctx, k, n, func(e *events.Event) {
			e.Reason = events.ReasonFailedToStart
			e.Message = msg
		}); err != nil {
			return err
		}
	}
	return s.forget(k)
}

// forget removes the kernel from the state (remembering it is gone) and
// from memory.
func (s *Service) forget(k *kernel) error {
	k.mu.Lock()
	k.closing = true
	k.mu.Unlock()
	if err := s.st.removeKernel(k.spec.MainKernelID, time.Now()); err != nil {
		return err
	}
	s.dropKernel(k)
	return nil
}

// runInitial runs the initial runs start recorded: the session's own Run,
// then a batch session's startup command, whose exit code ends the
// session.
func (s *Service) runInitial(ctx context.Context, k *kernel, runs []events.RunSpec) {
	var code int
	startup := false
	for _, r := range runs {
		c, ran := s.execute(ctx, k, r)
		if r.ID == events.StartupRunID {
			code, startup = c, ran
		}
	}
	if !startup {
		return
	}
	k.life.Lock()
	defer k.life.Unlock()
	k.mu.Lock()
	closing := k.closing
	k.mu.Unlock()
	if closing {
		return // terminated meanwhile: that termination reports the end
	}
	result, reason := events.EventSuccess, events.ReasonTaskFinished
	if code != 0 {
		result = events.EventFailure
	}
	if s.stopping.Load() {
		reason = events.ReasonKilled
	}
	k.mu.Lock()
	hit := k.limitHit
	k.mu.Unlock()
	err := s.publish(ctx, k, result, func(e *events.Event) {
		e.ExitCode = &code
		if code != 0 && hit != "" {
			reason, msg, _ := strings.Cut(hit, " ")
			e.Reason, e.Message = events.Reason(reason), strings.Trim(msg, "()")
		}
	})
	if err == nil {
		err = s.terminate(ctx, k, reason, true)
	}
	if err != nil {
		k.log.Error().Err(err).Msg("end batch session")
	}
}

// executeOnce runs one execution unless the kernel ran this run id before;
// ran is false when it did not run.
func (s *Service) executeOnce(ctx context.Context, k *kernel, run events.RunSpec) (code int, ran bool) {
	added, err := s.st.addRun(k.spec.MainKernelID, run.ID)
	if err != nil {
		k.log.Error().Err(err).Str("run_id", run.ID).Msg("record run")
		return 0, false
	}
	if !added {
		k.log.Info().Str("run_id", run.ID).Msg("duplicate run ignored")
		return 0, false
	}
	return s.execute(ctx, k, run)
}

// onExecute runs code in a kernel of this agent, in its own goroutine.
func (s *Service) onExecute(ctx context.Context, e *events.Event) error {
	if !events.ValidToken(e.Run.ID) {
		return fmt.Errorf("%w: run id %q is not a token", errPermanent, e.Run.ID)
	}
	k := s.lookup(e)
	if k == nil {
		s.log.Warn().Str("session_id", e.SessionID).Str("run_id", e.Run.ID).Msg("execute request for no kernel of this agent")
		lost, err := s.lostKernel(e.KernelID)
		if err != nil {
			return err
		}
		why := fmt.Sprintf("session %s has ended on agent %s", e.SessionID, s.id)
		if lost {
			why = s.lostMessage(e.KernelID)
		}
		if err := s.refuseRun(ctx, e.AccessKey, e.SessionID, e.Run.ID, why); err != nil {
			return err
		}
		if lost {
			return s.endLost(ctx, e)
		}
		return nil
	}
	k.mu.Lock()
	ok := k.phase == phaseRunning && !k.closing
	k.mu.Unlock()
	if !ok {
		k.log.Warn().Str("run_id", e.Run.ID).Msg("execute request for a kernel not running")
		return s.refuseRun(ctx, e.AccessKey, e.SessionID, e.Run.ID,
			fmt.Sprintf("the kernel of session %s is not running on agent %s", e.SessionID, s.id))
	}
	added, err := s.st.addRun(k.spec.MainKernelID, e.Run.ID)
	if err != nil {
		return err
	}
	if !added {
		k.log.Info().Str("run_id", e.Run.ID).Msg("duplicate run ignored")
		return nil
	}
	run := *e.Run
	s.execs.Go(func() { s.execute(ctx, k, run) })
	return nil
}

// onTerminating terminates a kernel and reports it.
func (s *Service) onTerminating(ctx context.Context, e *events.Event) error {
	reason := e.Reason
	if reason == "" {
		reason = events.ReasonUserRequested
	}
	k := s.lookup(e)
	if k == nil {
		known := false
		if e.KernelID != "" {
			var err error
			if known, err = s.st.known(e.KernelID); err != nil {
				return err
			}
		}
		if known {
			return nil // terminated before; that was reported
		}
		// Never heard of it: end the session so it does not hang in
		// TERMINATING.
		s.log.Warn().Str("session_id", e.SessionID).Msg("terminate for no kernel of this agent")
		return s.publishSession(ctx, e.AccessKey, e.SessionID, e.KernelID, events.EventTerminated, reason)
	}
	k.life.Lock()
	defer k.life.Unlock()
	return s.terminate(ctx, k, reason, true)
}

// onKernelCheck answers a kernel_check, sent after this agent came back
// with a new epoch: a session whose kernel the agent has no record of
// (its state was lost: the kernel, if the runtime still had it, was
// killed as an orphan) ends, reason kernel-lost. The check comes after
// everything placed here before it, so a kernel this agent started is in
// its map by then.
func (s *Service) onKernelCheck(ctx context.Context, e *events.Event) error {
	if s.lookup(e) != nil {
		return nil
	}
	lost, err := s.lostKernel(e.KernelID)
	if err != nil || !lost {
		return err
	}
	return s.endLost(ctx, e)
}

// lostKernel reports whether a kernel id that no kernel of this agent has
// was never heard of here either (neither running nor terminated): a
// kernel this agent lost the record of.
func (s *Service) lostKernel(kernelID string) (bool, error) {
	if kernelID == "" {
		return false, nil
	}
	known, err := s.st.known(kernelID)
	return !known, err
}

func (s *Service) lostMessage(kernelID string) string {
	return fmt.Sprintf("agent %s (epoch %d) has no record of kernel %s: its state was lost or reset, and a kernel it did not know was killed", s.id, s.epoch, kernelID)
}

// endLost ends the session of event e, whose kernel this agent lost:
// kernel_terminated, then session_terminated, reason kernel-lost, and it
// remembers the kernel as gone.
func (s *Service) endLost(ctx context.Context, e *events.Event) error {
	msg := s.lostMessage(e.KernelID)
	s.log.Warn().Str("session_id", e.SessionID).Str("kernel_id", e.KernelID).Msg("session ended: kernel lost")
	for _, n := range []events.Name{events.EventKernelExited, events.EventTerminated} {
		ev := s.event(e.AccessKey, e.SessionID, e.KernelID, n)
		ev.Reason, ev.Message = events.ReasonKernelLost, msg
		if err := s.publishEvent(ctx, ev); err != nil {
			return err
		}
	}
	return s.st.removeKernel(e.KernelID, time.Now())
}

// refuseRun ends a run that cannot run here at once: a line on its stderr
// saying why, then its exit (exitOnStart), so that whoever follows it is
// not left waiting.
func (s *Service) refuseRun(ctx context.Context, ak, sid, runID, why string) error {
	subj, err := events.OutputSubject(ak, sid, runID)
	if err != nil {
		return fmt.Errorf("%w: %v", errPermanent, err)
	}
	log := s.log.With().Str("session_id", sid).Str("run_id", runID).Logger()
	s.publishOutput(ctx, log, s.outputMsg(subj, events.StreamStderr, []byte("bai: "+why+"\n")))
	s.publishOutput(ctx, log, s.outputMsg(subj, events.StreamExit, []byte(strconv.Itoa(exitOnStart))))
	return nil
}

// onCancelled cleans up after a cancelled session, publishing nothing.
func (s *Service) onCancelled(ctx context.Context, e *events.Event) error {
	k := s.lookup(e)
	if k == nil {
		return nil
	}
	// The session is final: nothing the kernel still writes is its.
	k.ended.Store(true)
	k.life.Lock()
	defer k.life.Unlock()
	return s.terminate(ctx, k, e.Reason, false)
}

// terminate kills the kernel's executions, waits until their exits are
// published, destroys the kernel, reports it (when report) and forgets
// it. The caller holds k.life.
func (s *Service) terminate(ctx context.Context, k *kernel, reason events.Reason, report bool) error {
	k.mu.Lock()
	k.closing = true
	k.mu.Unlock()
	k.killAll(k.log)
	k.runs.Wait()
	if err := s.rt.Destroy(ctx, k.spec); err != nil {
		return err
	}
	if report {
		for _, n := range []events.Name{events.EventKernelExited, events.EventTerminated} {
			if err := s.publish(ctx, k, n, func(e *events.Event) { e.Reason = reason }); err != nil {
				return err
			}
		}
	}
	if err := s.forget(k); err != nil {
		return err
	}
	k.log.Info().Str("reason", string(reason)).Bool("reported", report).Msg("kernel terminated")
	return nil
}

// reconcile adopts the kernels of the state that the runtime still has and
// reports the others terminated; it finishes starts that were cut short.
func (s *Service) reconcile(ctx context.Context) error {
	recs, err := s.st.kernels()
	if err != nil {
		return err
	}
	for i := range recs {
		spec := &recs[i].Spec
		k := newKernel(spec, recs[i].Phase, s.log)
		s.addKernel(k)
		if recs[i].Phase == phaseStarting {
			// The placement may be acked already: finish the start here.
			if err := s.start(ctx, k); err != nil {
				return fmt.Errorf("resume start of kernel %s: %w", spec.MainKernelID, err)
			}
			continue
		}
		exists, err := s.rt.Exists(ctx, spec)
		if err != nil {
			return err
		}
		// A batch task does not survive its agent: its session ends.
		if exists && !(spec.Type == events.TypeBatch && spec.StartupCommand != "") {
			if a, ok := s.rt.(adopter); ok {
				// The executions of the agent before lost their output
				// pipes: they end; the kernel and its files stay.
				if err := a.Adopt(ctx, spec); err != nil {
					return fmt.Errorf("adopt kernel %s: %w", spec.MainKernelID, err)
				}
			}
			k.log.Info().Msg("kernel adopted")
			continue
		}
		k.life.Lock()
		err = s.terminate(ctx, k, events.ReasonAgentRestarted, true)
		k.life.Unlock()
		if err != nil {
			return err
		}
	}
	if r, ok := s.rt.(reaper); ok {
		keep := make(map[string]bool, len(recs))
		for i := range recs {
			keep[recs[i].Spec.MainKernelID] = true
		}
		ids, err := r.Reap(ctx, keep)
		for _, id := range ids {
			s.log.Warn().Str("kernel_id", id).Msg("orphan kernel killed: not in the agent's state")
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// adopter is a runtime that must be told of a kernel adopted after a
// restart.
type adopter interface {
	Adopt(ctx context.Context, k *events.SessionSpec) error
}

// reaper is a runtime that can find and destroy kernels the agent's state
// does not have (orphans of a crash between the runtime's create and the
// state's write, or of a lost state); it returns their ids.
type reaper interface {
	Reap(ctx context.Context, keep map[string]bool) ([]string, error)
}

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
// the message id, retrying a few times.
func (s *Service) publishEvent(ctx context.Context, e *events.Event) error {
	if _, err := events.EventSubject(e); err != nil {
		return err
	}
	for try := 1; ; try++ {
		pctx, cancel := context.WithTimeout(ctx, publishTimeout)
		_, err := streams.Publish(pctx, s.js, e, streams.Guard{})
		cancel()
		if err == nil {
			return nil
		}
		if try == publishTries || ctx.Err() != nil {
			return fmt.Errorf("publish %s of session %s: %w", e.Name, e.SessionID, err)
		}
		s.log.Warn().Err(err).Str("event", string(e.Name)).Int("try", try).Msg("publish event")
		if err := pause(ctx, time.Duration(try)*200*time.Millisecond); err != nil {
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

// publishAsync publishes an event about kernel k without waiting for its
// ack; waitBatch waits for it.
func (s *Service) publishAsync(b *eventBatch, k *kernel, name events.Name) {
	e := s.event(k.spec.AccessKey, k.spec.ID, k.spec.MainKernelID, name)
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
				s.log.Warn().Err(err).Str("event", string(b.events[i].Name)).Msg("publish event")
			case <-timer.C:
				s.log.Warn().Str("event", string(b.events[i].Name)).Msg("publish event: no ack in time")
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
