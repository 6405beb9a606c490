package gateway

import (
	"context"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/bai-sh/bai/pkg/events"
	"github.com/bai-sh/bai/pkg/events/streams"
)

// DefaultIdleTimeout is how long a running session may sit idle.
const DefaultIdleTimeout = 30 * time.Minute

// idleSession is what the reaper knows of one session.
type idleSession struct {
	ak, sid   string
	running   bool
	last      time.Time       // the last activity: start, execute request, output
	open      map[string]bool // runs requested and not yet exited
	requested bool            // the reaper asked for its termination
}

// reaper terminates sessions that have been idle for IdleTimeout: running,
// with no run in progress, and no execute request or output since. It
// follows the session log and the output stream (headers only) from their
// start, so a restarted gateway knows every session again.
type reaper struct {
	s        *Service
	timeout  time.Duration
	mu       sync.Mutex
	sessions map[string]*idleSession // ak/sid
	exited   map[string]bool         // ak/sid/run: exits seen before their request
	ctxs     []jetstream.ConsumeContext
	// behind counts the streams not yet replayed up to where they were
	// at start; nothing is reaped before both are, so a session is never
	// judged on half its history.
	behind int
	replay [2]uint64 // the last sequence of each stream at start
	seen   [2]uint64
}

func (s *Service) startReaper(ctx context.Context) (*reaper, error) {
	r := &reaper{s: s, timeout: s.cfg.IdleTimeout, sessions: map[string]*idleSession{}, exited: map[string]bool{}}
	srcs := []struct {
		stream, filter string
		headersOnly    bool
		h              func(jetstream.Msg)
	}{
		{streams.Sessions, events.AllSessionsFilter, false, r.onEvent},
		{streams.Output, events.AllOutputFilter, true, r.onOutput},
	}
	// Where each stream ends now, before any message is consumed.
	for i, x := range srcs {
		st, err := s.js.Stream(ctx, x.stream)
		if err != nil {
			return nil, err
		}
		if last := st.CachedInfo().State.LastSeq; last > 0 {
			r.replay[i] = last
			r.behind++
		}
	}
	for _, x := range srcs {
		cons, err := s.js.OrderedConsumer(ctx, x.stream, jetstream.OrderedConsumerConfig{
			FilterSubjects: []string{x.filter}, HeadersOnly: x.headersOnly,
		})
		if err != nil {
			r.stop()
			return nil, err
		}
		cc, err := cons.Consume(x.h)
		if err != nil {
			r.stop()
			return nil, err
		}
		r.ctxs = append(r.ctxs, cc)
	}
	return r, nil
}

func (r *reaper) stop() {
	for _, cc := range r.ctxs {
		cc.Stop()
	}
}

func (r *reaper) session(ak, sid string) *idleSession {
	key := ak + "/" + sid
	is := r.sessions[key]
	if is == nil {
		is = &idleSession{ak: ak, sid: sid, open: map[string]bool{}}
		r.sessions[key] = is
	}
	return is
}

func (r *reaper) openRun(is *idleSession, runID string) {
	k := is.ak + "/" + is.sid + "/" + runID
	if r.exited[k] {
		delete(r.exited, k)
		return
	}
	is.open[runID] = true
}

// progress counts message m of stream i toward the replay.
func (r *reaper) progress(i int, m jetstream.Msg) {
	md, err := m.Metadata()
	if err != nil || r.replay[i] == 0 || r.seen[i] >= r.replay[i] {
		return
	}
	r.seen[i] = md.Sequence.Stream
	if r.seen[i] >= r.replay[i] || md.NumPending == 0 {
		r.seen[i] = r.replay[i]
		r.behind--
	}
}

func (r *reaper) onEvent(m jetstream.Msg) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.progress(0, m)
	e, err := events.Decode(m.Subject(), m.Data())
	if err != nil {
		return
	}
	key := e.AccessKey + "/" + e.SessionID
	switch e.Name {
	case events.EventEnqueued:
		is := r.session(e.AccessKey, e.SessionID)
		if e.Session.Run != nil {
			r.openRun(is, e.Session.Run.ID)
		}
		if e.Session.Type == events.TypeBatch {
			r.openRun(is, events.StartupRunID)
		}
	case events.EventStarted:
		if is := r.sessions[key]; is != nil {
			is.running, is.last = true, e.Time
		}
	case events.EventExecuteRequest:
		if is := r.sessions[key]; is != nil {
			is.last = later(is.last, e.Time)
			r.openRun(is, e.Run.ID)
		}
	case events.EventTerminateRequest, events.EventTerminating, events.EventTerminated,
		events.EventCancelled, events.EventError:
		delete(r.sessions, key)
		for k := range r.exited {
			if strings.HasPrefix(k, key+"/") {
				delete(r.exited, k)
			}
		}
	}
}

func (r *reaper) onOutput(m jetstream.Msg) {
	parts := strings.Split(m.Subject(), ".")
	if len(parts) != 5 {
		r.mu.Lock()
		r.progress(1, m)
		r.mu.Unlock()
		return
	}
	ak, sid, runID := parts[2], parts[3], parts[4]
	t := time.Now().UTC()
	if md, err := m.Metadata(); err == nil {
		t = md.Timestamp
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.progress(1, m)
	is := r.sessions[ak+"/"+sid]
	if is == nil {
		return
	}
	is.last = later(is.last, t)
	if m.Headers().Get(events.HeaderStream) == events.StreamExit {
		if is.open[runID] {
			delete(is.open, runID)
		} else {
			r.exited[ak+"/"+sid+"/"+runID] = true
		}
	}
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// idle returns the sessions idle for the timeout at now.
func (r *reaper) idle(now time.Time) []*idleSession {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.behind > 0 {
		return nil
	}
	var out []*idleSession
	for _, is := range r.sessions {
		if is.running && !is.requested && len(is.open) == 0 && now.Sub(is.last) >= r.timeout {
			is.requested = true
			out = append(out, is)
		}
	}
	return out
}

func (r *reaper) run(ctx context.Context) {
	defer r.stop()
	tick := min(max(r.timeout/10, 50*time.Millisecond), 10*time.Second)
	t := time.NewTicker(tick)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			for _, is := range r.idle(now) {
				r.terminate(ctx, is)
			}
		}
	}
}

// terminate asks for an idle session's end, as rm does, with reason
// idle-timeout.
func (r *reaper) terminate(ctx context.Context, is *idleSession) {
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	ev := &events.Event{
		V: events.Version, ID: "idle-" + is.ak + "-" + is.sid, Name: events.EventTerminateRequest,
		Time: time.Now().UTC(), AccessKey: is.ak, SessionID: is.sid, Reason: events.ReasonIdleTimeout,
		Message: "idle for " + r.timeout.String(),
	}
	if _, err := r.s.publish(pctx, ev, ev.ID, false); err != nil {
		r.s.log.Warn().Err(err).Str("session_id", is.sid).Msg("idle_terminate_failed")
		r.mu.Lock()
		is.requested = false
		r.mu.Unlock()
		return
	}
	r.s.log.Info().Str("session_id", is.sid).Dur("idle_timeout", r.timeout).Msg("idle_timeout")
}
