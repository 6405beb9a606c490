package agent

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/bai-sh/bai/pkg/events"
	"github.com/bai-sh/bai/pkg/events/streams"
)

// The agent's work loop: dispatch reads the work consumer in log order,
// handle acts on one work message (a case per event name: add a handler
// for a new kind of work there), and the on* handlers below do each
// kind's part, using the kernel lifecycle (lifecycle.go) and publishing
// through publish.go.

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
	defer func() {
		s.release(it)
		s.starts.Wait() // their acks go out before the agent stops
	}()
	for {
		msg, err := streams.Next(ctx, it)
		if ctx.Err() != nil {
			if err == nil {
				s.nak(msg)
			}
			return
		}
		if err == nil {
			s.handle(work, msg)
			continue
		}
		s.log.Error().Err(err).Msg("agent_work_consumer_failed")
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
			s.log.Error().Err(err).Msg("resume_agent_work_consumer")
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
		s.log.Warn().Err(err).Msg("nak_work_message")
	}
}

// startAsync starts kernel k of placement msg in a goroutine of its own,
// then acknowledges msg as handle would. Until then msg counts as not
// done for the work cursor, and k's life lock is held: a later message
// about k waits for the start; the other kernels' do not.
//
// A later message about k that comes while it starts waits on k (later)
// and runs after the start, in log order, in this goroutine: the work
// loop goes on with the other kernels' work.
//
// Past startConcurrency starts, or startsPerKey of its access key, a
// placement waits for a free slot (startSlots) in its goroutine, not in
// the work loop, so a start past them holds back no other work either.
// While it waits and starts, msg is kept from being handed again (the
// ack wait is a minute; a pull can take longer).
func (s *Service) startAsync(work context.Context, msg jetstream.Msg, k *kernel, log zerolog.Logger) {
	s.hold(msg)
	// Taken here, in log order: whatever else takes it (a start again
	// after a restart, a run's end) waits for the start.
	k.life.Lock()
	// A termination cancels the start (later): its wait for a slot, then
	// the runtime's steps.
	sctx, cancel := context.WithCancel(work)
	k.mu.Lock()
	k.starting, k.stopStart = true, cancel
	k.mu.Unlock()
	s.starts.Go(func() {
		defer cancel()
		var err error
		stop := s.inProgress(work, msg, log)
		release, ok := s.startSlots.take(sctx, k.spec.AccessKey)
		switch {
		case ok:
			err = s.startLocked(work, sctx, k)
			release()
		case work.Err() != nil:
			err = work.Err()
		default:
			k.log.Info().Msg("kernel_start_cancelled: terminated while it waited for a start slot")
		}
		stop()
		k.life.Unlock()
		s.advance(msg, s.settle(msg, err, log))
		for {
			k.mu.Lock()
			queued := k.pending
			k.pending = nil
			if len(queued) == 0 {
				k.starting, k.stopStart = false, nil
			}
			k.mu.Unlock()
			if len(queued) == 0 {
				return
			}
			for _, w := range queued {
				w()
			}
		}
	})
}

// inProgress tells the server, every third of the ack wait until stop is
// called, that msg is still being worked on.
func (s *Service) inProgress(ctx context.Context, msg jetstream.Msg, log zerolog.Logger) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(workAckWait / 3)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-ctx.Done():
				return
			case <-t.C:
				if err := msg.InProgress(); err != nil {
					log.Warn().Err(err).Msg("work_in_progress")
				}
			}
		}
	})
	return func() {
		close(done)
		wg.Wait()
	}
}

// later queues the work of msg, about kernel k, if k is starting
// (startAsync), to run after the start; a termination first cancels the
// start's runtime steps (an image pull). It reports whether it queued.
func (s *Service) later(ctx context.Context, k *kernel, msg jetstream.Msg, e *events.Event, log zerolog.Logger) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	if !k.starting {
		return false
	}
	if e.Name == events.EventTerminating || e.Name == events.EventCancelled {
		k.stopped = true
		k.stopStart()
	}
	s.hold(msg)
	k.pending = append(k.pending, func() { s.advance(msg, s.settle(msg, s.onWork(ctx, e, log), log)) })
	return true
}

// hold counts msg as not done for the work cursor until advance.
func (s *Service) hold(msg jetstream.Msg) {
	md, err := msg.Metadata()
	if err != nil {
		return
	}
	s.curMu.Lock()
	s.retrying[md.Sequence.Stream] = struct{}{}
	s.highest = max(s.highest, md.Sequence.Stream)
	s.curMu.Unlock()
}

// advance moves the work cursor past msg once it is done with (handled or
// refused), never past a message handed back for a retry or still under
// way.
func (s *Service) advance(msg jetstream.Msg, done bool) {
	md, err := msg.Metadata()
	if err != nil {
		return
	}
	s.curMu.Lock()
	defer s.curMu.Unlock()
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

// handle acts on one work message and acknowledges it (settle) and moves
// the work cursor (advance); a transient failure naks it for redelivery.
// A placement's kernel is started in a goroutine of its own (startAsync),
// the rest here, in log order.
func (s *Service) handle(ctx context.Context, msg jetstream.Msg) {
	subj, err := events.WorkOrigin(msg.Headers().Get(events.WorkSourceHeader), s.id)
	var e *events.Event
	if err == nil {
		e, err = events.Decode(subj, msg.Data())
	}
	if err != nil {
		s.log.Warn().Err(err).Str("subject", subj).Msg("bad_work_message")
		if err := msg.Term(); err != nil {
			s.log.Warn().Err(err).Msg("terminate_bad_work_message")
		}
		s.advance(msg, true)
		return
	}
	log := s.log.With().Str("event", string(e.Name)).Str("event_id", e.ID).
		Str("session_id", e.SessionID).Logger()
	if e.Name == events.EventScheduled {
		var k *kernel
		if k, err = s.placement(e); k != nil {
			// A placement handed again while its start is under way is
			// done with once the start is.
			if !s.later(ctx, k, msg, e, log) {
				s.startAsync(ctx, msg, k, log)
			}
			return
		}
	} else {
		if k := s.lookup(e); k != nil && s.later(ctx, k, msg, e, log) {
			return
		}
		err = s.onWork(ctx, e, log)
	}
	s.advance(msg, s.settle(msg, err, log))
}

// onWork acts on a work message other than a placement.
func (s *Service) onWork(ctx context.Context, e *events.Event, log zerolog.Logger) error {
	switch e.Name {
	case events.EventScheduled:
		// Handed again while its start was under way: done with, unless
		// that start failed half way (it is handed back too).
		if k := s.lookup(e); k != nil && k.phase().startable() {
			return fmt.Errorf("placement of kernel %s handed again: its start did not finish", k.spec.MainKernelID)
		}
		log.Info().Msg("duplicate_placement_ignored: its start was under way")
		return nil
	case events.EventExecuteRequest:
		return s.onExecute(ctx, e)
	case events.EventTerminating:
		return s.onTerminating(ctx, e)
	case events.EventCancelled:
		return s.onCancelled(ctx, e)
	case events.EventKernelCheck:
		return s.onKernelCheck(ctx, e)
	}
	log.Debug().Msg("ignored_work_message")
	return nil
}

// settle acknowledges msg after its handler returned err: terminated when
// no retry can make it right, handed back for a retry after a transient
// failure, acknowledged otherwise. It reports whether msg is done with.
func (s *Service) settle(msg jetstream.Msg, err error, log zerolog.Logger) bool {
	if errors.Is(err, errPermanent) {
		log.Warn().Err(err).Msg("refused_work_message")
		if err := msg.Term(); err != nil {
			log.Warn().Err(err).Msg("terminate_work_message")
		}
		return true
	}
	if err != nil {
		log.Error().Err(err).Msg("handle_work_message")
		if err := msg.NakWithDelay(time.Second); err != nil {
			log.Warn().Err(err).Msg("nak_work_message")
		}
		return false
	}
	// No round trip: an ack lost on the way hands the work again after
	// the ack wait, which the handlers absorb as they absorb any
	// redelivery.
	if err := msg.Ack(); err != nil {
		log.Warn().Err(err).Msg("ack_work_message")
	}
	return true
}

// errPermanent marks a work message that no retry can make right.
var errPermanent = errors.New("unusable work message")

// placement is the kernel placement e asks this agent to start, once per
// kernel id: a new one, registered here (in log order, so that a later
// message about it finds it), or one whose earlier start failed half way;
// nil for a duplicate.
func (s *Service) placement(e *events.Event) (*kernel, error) {
	spec := e.Session
	if spec.ID != e.SessionID || spec.AccessKey != e.AccessKey || !events.ValidToken(spec.MainKernelID) {
		return nil, fmt.Errorf("%w: session_scheduled with a bad session spec", errPermanent)
	}
	s.mu.Lock()
	k := s.kernels[spec.MainKernelID]
	s.mu.Unlock()
	if k != nil {
		if !k.phase().startable() {
			return nil, nil // a duplicate
		}
		// An earlier try failed half way: finish it.
		return k, nil
	}
	known, err := s.st.known(spec.MainKernelID)
	if err != nil {
		return nil, err
	}
	if known {
		s.log.Info().Str("kernel_id", spec.MainKernelID).Msg("duplicate_placement_ignored")
		return nil, nil
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
	return k, nil
}

// onExecute runs code in a kernel of this agent, in its own goroutine.
func (s *Service) onExecute(ctx context.Context, e *events.Event) error {
	if !events.ValidToken(e.Run.ID) {
		return fmt.Errorf("%w: run id %q is not a token", errPermanent, e.Run.ID)
	}
	k := s.lookup(e)
	if k == nil {
		s.log.Warn().Str("session_id", e.SessionID).Str("run_id", e.Run.ID).Msg("execute_request_for_no_kernel_of_this_agent")
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
	ph := k.phase()
	if ph.startable() {
		// A start after a restart (reconcile), or one that failed half
		// way and waits for its placement again: wait for the life lock.
		k.life.Lock()
		ph = k.phase()
		k.life.Unlock()
	}
	if !ph.takesRuns() {
		k.log.Warn().Str("run_id", e.Run.ID).Msg("execute_request_for_a_kernel_not_running")
		return s.refuseRun(ctx, e.AccessKey, e.SessionID, e.Run.ID,
			fmt.Sprintf("the kernel of session %s is not running on agent %s", e.SessionID, s.id))
	}
	added, err := s.st.addRun(k.spec.MainKernelID, e.Run.ID)
	if err != nil {
		return err
	}
	if !added {
		k.log.Info().Str("run_id", e.Run.ID).Msg("duplicate_run_ignored")
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
		s.log.Warn().Str("session_id", e.SessionID).Msg("terminate_for_no_kernel_of_this_agent")
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
	s.log.Warn().Str("session_id", e.SessionID).Str("kernel_id", e.KernelID).Msg("session_ended: kernel lost")
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
