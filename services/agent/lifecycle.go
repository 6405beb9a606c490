package agent

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/bai-sh/bai/pkg/events"
)

// A kernel's lifecycle on this agent: its phase (starting, running,
// closing), start, the initial runs, terminate and forget, and the
// reconcile of the state after a restart.

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

	mu sync.Mutex
	// ph is where the kernel is in its life: read it with phase, move it
	// with running and close (or, holding mu, read k.ph).
	ph    phase
	procs map[string]Process
	// limitHit is the last limit an execution hit ("oom-killed", ...).
	limitHit string
	runs     sync.WaitGroup // running executions; Add under mu, only while not closed
	// steps are the steps of the start under way, if any (a pull report
	// flushes them first).
	steps *startSteps
	// While a start runs in its own goroutine (startAsync), starting is
	// set and the later work about the kernel waits in pending, in log
	// order, to run after the start, off the agent's work loop.
	starting bool
	pending  []func()
	// stopStart cancels the start under way in startAsync (its wait for
	// a slot, then the runtime's steps); stopped says a termination did
	// (later).
	stopStart context.CancelFunc
	stopped   bool
}

// startStopped reports whether a termination cancelled the start.
func (k *kernel) startStopped() bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.stopped
}

// phase is where a kernel is in its life on this agent. It only moves
// forward: starting (placed, being started; a placement delivered again
// finishes the start), running (session_started is published: it takes
// executions), closing (being terminated or forgotten: no new execution,
// no start).
type phase uint8

const (
	kernelStarting phase = iota
	kernelRunning
	kernelClosing
)

// phaseOf is the phase of a kernel whose record in the state says p
// (phaseStarting or phaseRunning).
func phaseOf(p string) phase {
	if p == phaseRunning {
		return kernelRunning
	}
	return kernelStarting
}

// String is the phase's name, as the state records it (closing is never
// recorded: a closed kernel's record is removed).
func (p phase) String() string {
	switch p {
	case kernelStarting:
		return phaseStarting
	case kernelRunning:
		return phaseRunning
	}
	return "closing"
}

// startable: a start may (still) be done.
func (p phase) startable() bool { return p == kernelStarting }

// takesRuns: new executions may start.
func (p phase) takesRuns() bool { return p == kernelRunning }

// closed: terminating or forgotten.
func (p phase) closed() bool { return p == kernelClosing }

// phase is the kernel's phase now.
func (k *kernel) phase() phase {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.ph
}

// running moves a started kernel to running (a closed one stays closed).
func (k *kernel) running() {
	k.mu.Lock()
	if k.ph == kernelStarting {
		k.ph = kernelRunning
	}
	k.mu.Unlock()
}

// close moves the kernel to closing: no new executions from now.
func (k *kernel) close() {
	k.mu.Lock()
	k.ph = kernelClosing
	k.mu.Unlock()
}

// newKernel is a kernel whose state record says phase p (phaseStarting
// for a new placement).
func newKernel(spec *events.SessionSpec, p string, log zerolog.Logger) *kernel {
	return &kernel{
		spec:  spec,
		ph:    phaseOf(p),
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
			log.Warn().Err(err).Msg("kill_execution")
		}
	}
}

// start walks a kernel from its placement to RUNNING, then starts its
// initial executions. A step already done is done again
// harmlessly (the projections absorb duplicate events).
func (s *Service) start(ctx context.Context, k *kernel) error {
	k.life.Lock()
	defer k.life.Unlock()
	return s.startLocked(ctx, ctx, k)
}

// startLocked is start with k.life held by the caller; the runtime's
// steps run under rctx (which a termination cancels, startAsync), the
// rest under ctx.
func (s *Service) startLocked(ctx, rctx context.Context, k *kernel) error {
	if k.phase().closed() || k.phase().takesRuns() {
		return nil // ended meanwhile, or started by a start before (a redelivery)
	}
	if k.startStopped() {
		return nil // terminated before it began: the termination ends it
	}
	spec := k.spec
	// The lifecycle events go out asynchronously, in order on the agent's
	// one connection, and every one is acknowledged by the log before
	// start returns (and so before the work message is acked): a crash
	// before then redelivers the placement. A quick start's steps are
	// folded into its session_started (startSteps).
	st := s.newStartSteps(k)
	defer st.close()
	st.step(events.EventPreparing)
	if err := s.rt.Prepare(rctx, spec); err != nil {
		return s.failStartSteps(ctx, k, st, err)
	}
	st.step(events.EventPrepared)
	st.step(events.EventCreating)
	if err := s.rt.Create(rctx, spec); err != nil {
		return s.failStartSteps(ctx, k, st, err)
	}
	crashAt("after-create")
	st.step(events.EventKernelStarted)
	st.end(events.EventStarted)
	if err := s.waitBatch(ctx, &st.b); err != nil {
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
	k.running()
	k.log.Info().Msg("kernel_started")
	var runs []events.RunSpec
	for i, r := range initial {
		if added[i] {
			runs = append(runs, r)
		} else {
			k.log.Info().Str("run_id", r.ID).Msg("duplicate_run_ignored")
		}
	}
	if len(runs) > 0 {
		s.execs.Go(func() { s.runInitial(ctx, k, runs) })
	}
	return nil
}

// failStartSteps puts the steps st holds on the log, then reports the
// failed start. A start cancelled by a termination (later) is no
// failure: it reports nothing more, and the termination, which runs
// next, destroys what the runtime made and reports the end.
func (s *Service) failStartSteps(ctx context.Context, k *kernel, st *startSteps, cause error) error {
	stopped := k.startStopped()
	if !stopped {
		st.flush()
	}
	st.close()
	if err := s.waitBatch(ctx, &st.b); err != nil {
		return err
	}
	if stopped {
		k.log.Info().Err(cause).Msg("kernel_start_cancelled: the kernel is being terminated")
		return nil
	}
	return s.failStart(ctx, k, cause)
}

// startSteps publishes the steps of one kernel's start (PREPARING,
// PREPARED, CREATING, kernel_started). While the start is quick it holds
// them, and end folds them into the session_started (Event.Steps): one
// write on the log instead of five. Once the start has taken longer than
// Config.FoldStarts, or a pull or a failure is to be reported, flush puts
// the held steps on the log, each as its own event with its own time,
// and every later step goes out as it comes, so that a slow start shows
// where it is (and the scheduler's deadline is the step's).
type startSteps struct {
	s     *Service
	k     *kernel
	timer *time.Timer // nil when every step goes out as it comes

	mu     sync.Mutex
	b      eventBatch // what is published, to wait for with waitBatch (after close)
	held   []events.Step
	live   bool // each step goes out as it comes
	closed bool // the timer flushes nothing any more
}

// newStartSteps starts holding k's steps.
func (s *Service) newStartSteps(k *kernel) *startSteps {
	st := &startSteps{s: s, k: k, live: s.cfg.FoldStarts < 0}
	if !st.live {
		st.timer = time.AfterFunc(s.cfg.FoldStarts, st.flush)
	}
	k.mu.Lock()
	k.steps = st
	k.mu.Unlock()
	return st
}

// step records that the start reached n now.
func (st *startSteps) step(n events.Name) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.live {
		st.s.publishAsync(&st.b, st.k, n, nil)
		return
	}
	st.held = append(st.held, events.Step{Name: n, Time: time.Now().UTC()})
}

// flush publishes the held steps with their times; the later ones go out
// as they come.
func (st *startSteps) flush() {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.live || st.closed {
		return
	}
	st.live = true
	for _, h := range st.held {
		st.s.publishAsync(&st.b, st.k, h.Name, func(e *events.Event) { e.Time = h.Time })
	}
	st.held = nil
}

// end publishes the start's last event, n, with the steps still held
// folded into it.
func (st *startSteps) end(n events.Name) {
	st.close()
	st.mu.Lock()
	defer st.mu.Unlock()
	held := st.held
	st.held, st.live = nil, true
	st.s.publishAsync(&st.b, st.k, n, func(e *events.Event) { e.Steps = held })
}

// close stops the timer: nothing is flushed by it from now on, and what
// it flushed before is in st.b (read it after close).
func (st *startSteps) close() {
	if st.timer != nil {
		st.timer.Stop()
	}
	st.mu.Lock()
	st.closed = true
	st.mu.Unlock()
	st.k.mu.Lock()
	if st.k.steps == st {
		st.k.steps = nil
	}
	st.k.mu.Unlock()
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
		// The start's steps so far come first on the log.
		k.mu.Lock()
		st := k.steps
		k.mu.Unlock()
		if st != nil {
			st.flush()
		}
		var err error
		if progress < 0 {
			err = s.publish(ctx, k, events.EventPulling, nil)
		} else {
			err = s.publish(ctx, k, events.EventPullProgress, func(e *events.Event) { e.Progress = &progress })
		}
		if err != nil {
			k.log.Warn().Err(err).Msg("publish_pull_progress")
		}
	}
}

// failStart reports a kernel that could not start and forgets it.
func (s *Service) failStart(ctx context.Context, k *kernel, cause error) error {
	k.log.Warn().Err(cause).Msg("kernel_failed_to_start")
	if err := s.rt.Destroy(ctx, k.spec); err != nil {
		k.log.Warn().Err(err).Msg("destroy_kernel")
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
	k.close()
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
	if k.phase().closed() {
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
		k.log.Error().Err(err).Msg("end_batch_session")
	}
}

// terminate kills the kernel's executions, waits until their exits are
// published, destroys the kernel, reports it (when report) and forgets
// it. The caller holds k.life.
func (s *Service) terminate(ctx context.Context, k *kernel, reason events.Reason, report bool) error {
	k.close()
	k.killAll(k.log)
	k.runs.Wait()
	if err := s.rt.Destroy(ctx, k.spec); err != nil {
		return err
	}
	if report {
		if err := s.publish(ctx, k, events.EventTerminated, func(e *events.Event) {
			e.Reason = reason
			e.Steps = []events.Step{{Name: events.EventKernelExited, Time: e.Time}}
		}); err != nil {
			return err
		}
	}
	if err := s.forget(k); err != nil {
		return err
	}
	k.log.Info().Str("reason", string(reason)).Bool("reported", report).Msg("kernel_terminated")
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
			k.log.Info().Msg("kernel_adopted")
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
			s.log.Warn().Str("kernel_id", id).Msg("orphan_kernel_killed: not in the agent's state")
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
