package registry

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/bai-sh/bai/pkg/events"
	"github.com/bai-sh/bai/pkg/events/streams"
)

// maxLogsBytes bounds the output one session.logs reply carries (a NATS
// message is at most 1 MiB by default): the newest output is kept.
const maxLogsBytes = 768 << 10

// handleLogs answers session.logs: the session's output so far, from the
// output stream (tenants have no JetStream API of their own).
func (s *Service) handleLogs(ak string, data []byte) (any, error) {
	ref, ak, err := s.ref(ak, "logs", data)
	if err != nil {
		return nil, err
	}
	s.catchUp(catchUpWait)
	infoAny, err := s.withStore(func(st *store) (any, error) {
		info, ok, err := st.get(ak, ref)
		if err == nil && !ok {
			err = notFound(ref)
		}
		return info, err
	})
	if err != nil {
		return nil, err
	}
	info := infoAny.(events.SessionInfo)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var ended time.Time
	if info.Status.Final() && s.js != nil {
		if ended, err = s.endedAt(ctx, info.AccessKey, info.ID); err != nil {
			s.log.Error().Err(err).Str("session_id", info.ID).Msg("read_session_end")
			return nil, events.Errorf(events.ErrInternal, "could not read the end of session %s: %v", info.ID, err)
		}
	}
	chunks, truncated, err := s.readOutput(ctx, info.AccessKey, info.ID, ended)
	if err != nil {
		s.log.Error().Err(err).Str("session_id", info.ID).Msg("read_output")
		return nil, events.Errorf(events.ErrInternal, "could not read the output of session %s: %v", info.ID, err)
	}
	return events.LogsResponse{SessionID: info.ID, Chunks: chunks, Truncated: truncated}, nil
}

// endedAt is when the log stored the event that made session sid final
// (its first session_terminated or session_cancelled); zero when there is
// none.
func (s *Service) endedAt(ctx context.Context, ak, sid string) (time.Time, error) {
	st, err := s.js.Stream(ctx, streams.Sessions)
	if err != nil {
		return time.Time{}, err
	}
	base := "bai.session." + ak + "." + sid + "."
	var first time.Time
	for _, subj := range []string{base + string(events.EventTerminated), base + string(events.EventCancelled),
		base + string(events.EventCancelled) + ".*"} {
		m, err := st.GetMsg(ctx, 1, jetstream.WithGetMsgSubject(subj))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			return time.Time{}, err
		}
		if first.IsZero() || m.Time.Before(first) {
			first = m.Time
		}
	}
	return first, nil
}

// readOutput reads every output message of one session, oldest first,
// keeping at most maxLogsBytes of the newest. Output stored after ended
// (when not zero), the moment the session's end was stored, is not the
// session's: a kernel of an agent declared lost, still running for a
// while, wrote it; it is left out.
func (s *Service) readOutput(ctx context.Context, ak, sid string, ended time.Time) ([]events.OutputChunk, bool, error) {
	chunks := []events.OutputChunk{}
	if s.js == nil {
		return chunks, false, nil
	}
	filter, err := events.OutputFilter(ak, sid)
	if err != nil {
		return nil, false, err
	}
	cons, err := s.js.OrderedConsumer(ctx, streams.Output, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{filter}, InactiveThreshold: 10 * time.Second,
	})
	if err != nil {
		return nil, false, err
	}
	size, truncated, stale := 0, false, 0
	defer func() {
		if stale > 0 {
			s.log.Warn().Str("session_id", sid).Int("messages", stale).Msg("output_stored_after_the_session_ended_left_out")
		}
	}()
	// Every run is read from its start: a chunk the log stored after
	// later ones (sent again after a lost acknowledgement) goes back in
	// place; a run's exit comes after all its chunks.
	order := events.NewChunkOrder[events.OutputChunk](true).
		LimitBytes(events.MaxHeldBytes, func(c events.OutputChunk) int { return len(c.Data) })
	var ready []events.OutputChunk
	emit := func(out []events.OutputChunk) {
		for _, ch := range out {
			size += len(ch.Data)
			chunks = append(chunks, ch)
			for size > maxLogsBytes && len(chunks) > 1 {
				size -= len(chunks[0].Data)
				chunks = chunks[1:]
				truncated = true
			}
		}
	}
	for {
		batch, err := cons.FetchNoWait(256)
		if err != nil {
			return nil, false, err
		}
		n := 0
		var pending uint64
		for m := range batch.Messages() {
			n++
			md, err := m.Metadata()
			if err != nil {
				continue
			}
			pending = md.NumPending
			if !ended.IsZero() && md.Timestamp.After(ended) {
				stale++
				continue
			}
			runID := m.Subject()[strings.LastIndexByte(m.Subject(), '.')+1:]
			ch := events.OutputChunk{RunID: runID, Stream: m.Headers().Get(events.HeaderStream), Time: md.Timestamp.UTC()}
			if ch.Stream == events.StreamExit {
				if code, err := strconv.Atoi(strings.TrimSpace(string(m.Data()))); err == nil {
					ch.ExitCode = &code
				}
				ready = append(order.Flush(ready[:0], runID), ch)
			} else {
				ch.Data = string(m.Data())
				ch.Chunk = events.ChunkNumber(m.Headers().Get(events.HeaderChunk))
				ready = order.Add(ready[:0], runID, ch.Stream, ch.Chunk, ch)
			}
			emit(ready)
		}
		if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) {
			return nil, false, err
		}
		if n == 0 || pending == 0 {
			// Runs still going, or whose missing chunk was lost.
			emit(order.Flush(ready[:0], ""))
			return chunks, truncated, nil
		}
	}
}
