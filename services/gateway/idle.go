package gateway

import (
	"context"
	"errors"
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
	agent     string // the agent it is placed on; "" until scheduled
	running   bool
	started   time.Time       // when it started running
	last      time.Time       // the last activity: start, execute request, output
	open      map[string]bool // runs requested and not yet exited
	requested bool            // the reaper asked for its termination
}

// reaper terminates sessions that have been idle for their idle timeout:
// running, with no run in progress, and no execute request or output
// since; and sessions that have run longer than their max session
// lifetime, busy or not. Both limits come from the resource policy of the
// session's access key (idle_timeout, max_session_lifetime, in seconds);
// a policy that leaves the idle timeout at 0 gets IdleTimeout, one that
// leaves the lifetime at 0 has none. It follows the session log and the
// output stream (headers only) from their start, so a restarted gateway
// knows every session again.
type reaper struct {
	s       *Service
	timeout time.Duration // the default idle timeout; <= 0: none
	// limits caches each access key's policy limits for policyTTL.
	limitsMu sync.Mutex
	limits   map[string]keyLimits
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
	r := &reaper{s: s, timeout: s.cfg.IdleTimeout, sessions: map[string]*idleSession{}, exited: map[string]bool{},
		limits: map[string]keyLimits{}}
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
		cc, err := cons.Consume(x.h, streams.FollowHeartbeat, streams.FollowExpiry)
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
		is = &idleSession{ak: ak, sid: sid}
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
	if is.open == nil {
		is.open = map[string]bool{}
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

// reaperEvents are the events onEvent acts on.
var reaperEvents = map[events.Name]bool{
	events.EventEnqueued: true, events.EventScheduled: true, events.EventStarted: true, events.EventExecuteRequest: true,
	events.EventTerminateRequest: true, events.EventTerminating: true, events.EventTerminated: true,
	events.EventCancelled: true, events.EventError: true,
}

func (r *reaper) onEvent(m jetstream.Msg) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.progress(0, m)
	// Most of the log is lifecycle steps the reaper has no use for: the
	// subject says which, and only the others are decoded.
	ss, err := events.ParseSessionSubject(m.Subject())
	if err != nil || !reaperEvents[ss.Name] {
		return
	}
	e, err := events.Decode(m.Subject(), m.Data())
	if err != nil {
		return
	}
	key := e.AccessKey + "/" + e.SessionID
	if e.Name.AgentReport() {
		// An agent speaks only for the kernels placed on it (issue 12
		// §4): a forged start would have the reaper end a pending
		// session, a forged end would spare a running one.
		is := r.sessions[key]
		if is == nil && e.Name != events.EventStarted {
			// The end of a session the reaper let go of (at its
			// terminate request: every bai rm of a running session) or
			// never knew: nothing to act on, nothing to refuse.
			return
		}
		placed := ""
		if is != nil {
			placed = is.agent
		}
		if events.NotFromPlacedAgent(placed, e) {
			r.s.log.Warn().Str("event", string(e.Name)).Str("session_id", e.SessionID).Str("agent_id", e.AgentID).
				Str("placed_on", placed).Msg("event_from_wrong_agent_refused")
			return
		}
	}
	switch e.Name {
	case events.EventScheduled:
		if is := r.session(e.AccessKey, e.SessionID); is.agent == "" {
			is.agent = e.AgentID
		}
	case events.EventEnqueued:
		// A pending session is known here only for the runs it starts
		// with (open from the start); the others from when they start:
		// a queue of a million sessions costs nothing here.
		if e.Session.Run != nil {
			r.openRun(r.session(e.AccessKey, e.SessionID), e.Session.Run.ID)
		}
		if e.Session.Type == events.TypeBatch {
			r.openRun(r.session(e.AccessKey, e.SessionID), events.StartupRunID)
		}
	case events.EventStarted:
		is := r.session(e.AccessKey, e.SessionID)
		is.running, is.started, is.last = true, e.Time, e.Time
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

// policyTTL is how long the reaper trusts a key's policy limits.
const policyTTL = 5 * time.Second

// keyLimits are the limits of one access key, as the reaper applies them.
type keyLimits struct {
	idle, lifetime time.Duration // <= 0: none
	read           time.Time
}

// limitsOf returns ak's idle timeout and max session lifetime: its
// policy's, the idle timeout defaulting to the gateway's. A key without
// a keypair or policy gets the defaults; a failed read keeps the last
// known limits.
func (r *reaper) limitsOf(ctx context.Context, ak string, now time.Time) keyLimits {
	r.limitsMu.Lock()
	l, ok := r.limits[ak]
	r.limitsMu.Unlock()
	if ok && now.Sub(l.read) < policyTTL {
		return l
	}
	p, err := r.s.policyLimits(ctx, ak)
	if err != nil {
		r.s.log.Warn().Err(err).Str("access_key", ak).Msg("reaper_policy")
		if ok {
			return l
		}
	}
	l = keyLimits{idle: r.timeout, read: now}
	if p != nil {
		if p.IdleTimeout > 0 {
			l.idle = time.Duration(p.IdleTimeout) * time.Second
		}
		l.lifetime = time.Duration(p.MaxSessionLifetime) * time.Second
	}
	r.limitsMu.Lock()
	r.limits[ak] = l
	r.limitsMu.Unlock()
	return l
}

// policyLimits is the policy of ak's keypair; nil when it has none.
func (s *Service) policyLimits(ctx context.Context, ak string) (*Policy, error) {
	if s.quota == nil {
		return nil, nil
	}
	kp, _, err := s.quota.keys.Get(ctx, ak)
	if errors.Is(err, ErrNoKeypair) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if kp.Policy == "" {
		return nil, nil
	}
	p, err := s.quota.keys.GetPolicy(ctx, kp.Policy)
	if errors.Is(err, ErrNoPolicy) {
		return nil, nil
	}
	return p, err
}

// reap is one session the reaper ends, and why.
type reap struct {
	is     *idleSession
	reason events.Reason
	limit  time.Duration
}

// due returns the sessions to end at now: past their max lifetime, or
// idle for their idle timeout.
func (r *reaper) due(ctx context.Context, now time.Time) []reap {
	r.mu.Lock()
	if r.behind > 0 {
		r.mu.Unlock()
		return nil
	}
	aks := map[string]bool{}
	for _, is := range r.sessions {
		if is.running && !is.requested {
			aks[is.ak] = true
		}
	}
	r.mu.Unlock()
	limits := make(map[string]keyLimits, len(aks))
	for ak := range aks {
		limits[ak] = r.limitsOf(ctx, ak, now)
	}
	// Forget the keys with no running session.
	r.limitsMu.Lock()
	for ak := range r.limits {
		if !aks[ak] {
			delete(r.limits, ak)
		}
	}
	r.limitsMu.Unlock()
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []reap
	for _, is := range r.sessions {
		l, ok := limits[is.ak]
		if !ok || !is.running || is.requested {
			continue
		}
		switch {
		case l.lifetime > 0 && now.Sub(is.started) >= l.lifetime:
			out = append(out, reap{is, events.ReasonMaxLifetime, l.lifetime})
		case l.idle > 0 && len(is.open) == 0 && now.Sub(is.last) >= l.idle:
			out = append(out, reap{is, events.ReasonIdleTimeout, l.idle})
		default:
			continue
		}
		is.requested = true
	}
	return out
}

func (r *reaper) run(ctx context.Context) {
	defer r.stop()
	tick := time.Second
	if r.timeout > 0 {
		tick = min(max(r.timeout/10, 50*time.Millisecond), tick)
	}
	t := time.NewTicker(tick)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			for _, x := range r.due(ctx, now) {
				r.terminate(ctx, x)
			}
		}
	}
}

// terminate asks for a session's end, as rm does, with the reason.
func (r *reaper) terminate(ctx context.Context, x reap) {
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	is := x.is
	what, prefix := "idle for ", "idle-"
	if x.reason == events.ReasonMaxLifetime {
		what, prefix = "ran longer than its max session lifetime of ", "lifetime-"
	}
	ev := &events.Event{
		V: events.Version, ID: prefix + is.ak + "-" + is.sid, Name: events.EventTerminateRequest,
		Time: time.Now().UTC(), AccessKey: is.ak, SessionID: is.sid, Reason: x.reason,
		Message: what + x.limit.String(),
	}
	if _, err := r.s.publish(pctx, ev, ev.ID, false); err != nil {
		r.s.log.Warn().Err(err).Str("session_id", is.sid).Str("reason", string(x.reason)).Msg("reaper_terminate_failed")
		r.mu.Lock()
		is.requested = false
		r.mu.Unlock()
		return
	}
	r.s.log.Info().Str("session_id", is.sid).Str("reason", string(x.reason)).Dur("limit", x.limit).Msg(string(x.reason))
}
