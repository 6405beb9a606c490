package scheduler

import (
	"context"
	"time"

	"github.com/nats-io/nats.go"
)

// readHealth is whether the scheduler can read the agents' bucket. An
// agent's silence is evidence that it stopped beating only while the
// scheduler could have heard it: while its connection is down, or the
// bucket does not answer (its stream has no leader: a NATS node is down
// or electing), agents' heartbeats may fail to be stored or to reach the
// scheduler through no fault of theirs. So once reads work again, every
// agent's silence is measured from that moment (restartSilence), and
// agents get a whole AgentTimeout to beat again.
type readHealth struct {
	failing    bool   // a read failed, or the connection was down, since reads last worked
	reconnects uint64 // the connection's reconnect count when last checked
	since      time.Time
	resumed    int // times reads worked again after failing
}

// agentsReadable reports whether the agents' bucket can be read now; the
// first time it can after it could not, it restarts every agent's
// silence clock. It is called once a tick by the decision loop, before
// lostAgents, without s.mu (it takes it to write the state). A reconnect of the scheduler's connection since the last
// tick counts as a time it could not read: the watch may have missed
// heartbeats meanwhile.
func (s *Service) agentsReadable(ctx context.Context, now time.Time) bool {
	if nc := s.cfg.NC; nc != nil {
		if nc.Status() != nats.CONNECTED {
			s.readsFailed(now)
			return false
		}
		if n := nc.Stats().Reconnects; n != s.reads.reconnects {
			s.reads.reconnects = n
			s.readsFailed(now)
		}
	}
	if s.agents == nil {
		return true
	}
	// The bucket's stream info is answered by its leader: the bucket can
	// take heartbeats now, not only serve old ones from a replica.
	pctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	if _, err := s.agents.Status(pctx); err != nil {
		if !s.reads.failing {
			s.log.Warn().Err(err).Msg("agents_bucket_unreadable: no agent is declared lost until it answers again")
		}
		s.readsFailed(now)
		return false
	}
	if s.reads.failing {
		s.reads.failing = false
		s.reads.resumed++
		s.mu.Lock()
		s.restartSilence(now)
		s.mu.Unlock()
		s.log.Warn().Dur("unreadable_for", now.Sub(s.reads.since)).Msg("agents_bucket_readable_again: agent silence measured from now")
	}
	return true
}

// readsFailed records that the agents' bucket could not be read (only
// the decision loop reads or writes s.reads).
func (s *Service) readsFailed(now time.Time) {
	if !s.reads.failing {
		s.reads.failing, s.reads.since = true, now
	}
}

// restartSilence measures every known agent's silence from now.
func (s *Service) restartSilence(now time.Time) {
	for _, a := range s.st.agents {
		if a.seen.Before(now) {
			a.seen = now
		}
	}
}
