package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"sync"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/bai-sh/bai/pkg/events"
)

// Output chunking: the largest chunk, and how many chunks of one stream
// may wait for their acks.
const (
	chunkSize   = 32 << 10
	ackWindow   = 64
	exitOnStart = 127 // the exit code of a run that could not start
	exitRefused = 137 // the exit code of a run refused by a terminating kernel: SIGKILL's
)

// execute runs one execution in kernel k and streams its output; it
// returns when the exit message is published. ran is false only when
// the run cannot have an output subject.
func (s *Service) execute(ctx context.Context, k *kernel, run events.RunSpec) (code int, ran bool) {
	log := k.log.With().Str("run_id", run.ID).Logger()
	subj, err := outputSubject(k, run.ID)
	if err != nil {
		log.Error().Err(err).Msg("output_subject")
		return 0, false
	}
	if err := s.fetchUploads(ctx, k, run); err != nil {
		log.Warn().Err(err).Msg("fetch_uploaded_files")
		s.publishOutput(ctx, log, s.outputMsg(subj, events.StreamStderr, []byte(fmt.Sprintf("bai: %v\n", err))))
		s.publishOutput(ctx, log, s.outputMsg(subj, events.StreamExit, []byte(strconv.Itoa(exitOnStart))))
		return exitOnStart, true
	}
	k.mu.Lock()
	if k.ph.closed() || s.stopping.Load() {
		k.mu.Unlock()
		// Accepted but never started: it ends as if killed at once, so
		// that whoever follows its output is not left waiting.
		log.Info().Msg("execution_refused: kernel terminating")
		s.publishOutput(ctx, log, s.outputMsg(subj, events.StreamStderr, []byte("bai: run cancelled: the kernel is terminating\n")))
		s.publishOutput(ctx, log, s.outputMsg(subj, events.StreamExit, []byte(strconv.Itoa(exitRefused))))
		return exitRefused, true
	}
	p, err := s.rt.Exec(ctx, k.spec, run)
	if err != nil {
		k.mu.Unlock()
		log.Warn().Err(err).Msg("start_execution")
		s.publishOutput(ctx, log, s.outputMsg(subj, events.StreamStderr, []byte(fmt.Sprintf("bai: %v\n", err))))
		s.publishOutput(ctx, log, s.outputMsg(subj, events.StreamExit, []byte(strconv.Itoa(exitOnStart))))
		return exitOnStart, true
	}
	k.procs[run.ID] = p
	k.runs.Add(1)
	k.mu.Unlock()
	defer k.runs.Done()
	log.Debug().Msg("execution_started")

	var pumps sync.WaitGroup
	pumps.Go(func() { s.pump(ctx, log, k, subj, events.StreamStdout, p.Stdout()) })
	pumps.Go(func() { s.pump(ctx, log, k, subj, events.StreamStderr, p.Stderr()) })
	code, err = p.Wait()
	if err != nil {
		log.Warn().Err(err).Msg("wait_execution")
	}
	pumps.Wait()
	if rp, ok := p.(interface{ Reason() string }); ok {
		if reason := rp.Reason(); reason != "" {
			log.Warn().Str("reason", reason).Int("exit_code", code).Msg("execution_hit_a_limit_of_its_kernel")
			s.publishOutput(ctx, log, s.outputMsg(subj, events.StreamStderr, []byte("bai: "+reason+"\n")))
			k.mu.Lock()
			k.limitHit = reason
			k.mu.Unlock()
		}
	}
	if err := p.Close(); err != nil {
		log.Warn().Err(err).Msg("close_execution_output")
	}
	k.mu.Lock()
	delete(k.procs, run.ID)
	k.mu.Unlock()
	if k.ended.Load() {
		log.Info().Int("exit_code", code).Msg("execution_ended_after_its_session: exit not published")
		return code, true
	}
	s.publishOutput(ctx, log, s.outputMsg(subj, events.StreamExit, []byte(strconv.Itoa(code))))
	log.Debug().Int("exit_code", code).Msg("execution_ended")
	return code, true
}

// pump publishes r in chunks until EOF and waits for every ack. Once the
// kernel's session is known to have ended (k.ended) it reads on but
// publishes nothing more: the output of a session already final is not
// its own any more.
func (s *Service) pump(ctx context.Context, log zerolog.Logger, k *kernel, subj, stream string, r io.Reader) {
	var pending []jetstream.PubAckFuture
	wait := func(f jetstream.PubAckFuture) {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			// Published again synchronously: late rather than lost; its
			// number lets readers put it back in place.
			log.Warn().Err(err).Str("stream", stream).Msg("output_chunk_not_acked")
			s.publishOutput(ctx, log, f.Msg())
		}
	}
	buf := make([]byte, chunkSize)
	var seq uint64
	for {
		n, err := r.Read(buf)
		if n > 0 && k.ended.Load() {
			n = 0
		}
		if n > 0 {
			s.metrics.wrote(stream, n)
			seq++
			msg := s.outputMsg(subj, stream, append([]byte(nil), buf[:n]...))
			msg.Header[events.HeaderChunk] = []string{strconv.FormatUint(seq, 10)}
			f, perr := s.js.PublishMsgAsync(msg)
			if perr != nil {
				for _, f := range pending {
					wait(f)
				}
				pending = pending[:0]
				s.publishOutput(ctx, log, msg)
			} else {
				pending = append(pending, f)
				if len(pending) >= ackWindow {
					wait(pending[0])
					pending = pending[1:]
				}
			}
		}
		if err != nil {
			if !errors.Is(err, io.EOF) {
				log.Warn().Err(err).Str("stream", stream).Msg("read_output")
			}
			break
		}
	}
	for _, f := range pending {
		wait(f)
	}
}

// publishOutput publishes one output message synchronously, retrying for
// publishPatience with its message id (the stream keeps it once); a
// failure past that is logged: the output is lost.
func (s *Service) publishOutput(ctx context.Context, log zerolog.Logger, msg *nats.Msg) {
	err := patiently(ctx, nil, func(ctx context.Context) error {
		_, err := s.js.PublishMsg(ctx, msg)
		return err
	})
	if err != nil && ctx.Err() == nil {
		log.Error().Err(err).Str("stream", msg.Header.Get(events.HeaderStream)).Msg("publish_output")
	}
}

// outputMsg is one output message with an id of its own (a message sent
// again after a lost acknowledgement is stored once), stamped with the
// agent's epoch.
func (s *Service) outputMsg(subj, stream string, data []byte) *nats.Msg {
	return &nats.Msg{Subject: subj, Data: data, Header: nats.Header{
		events.HeaderStream: []string{stream}, jetstream.MsgIDHeader: []string{events.NewID()},
		events.HeaderEpoch: []string{strconv.FormatUint(s.epoch, 10)},
	}}
}

func outputSubject(k *kernel, runID string) (string, error) {
	return events.OutputSubject(k.spec.AccessKey, k.spec.ID, runID)
}
