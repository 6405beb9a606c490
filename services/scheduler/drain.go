package scheduler

import (
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/bai-sh/bai/pkg/events"
)

// Draining: an admin drains an agent (bai admin agent drain, through the
// gateway), which puts the key events.DrainKey(id) in the agents bucket;
// the scheduler's watch of the bucket sees it, and the agent takes no new
// placements (agent.live) while its running sessions go on. Undrain
// deletes the key.

// drainInput reads a drain key's entry of the agents' watch: the agent
// id and whether it is drained now; false for any other key.
func drainInput(e jetstream.KeyValueEntry) (input, bool) {
	id, ok := events.DrainedAgent(e.Key())
	if !ok {
		return input{}, false
	}
	return input{drainID: id, drained: e.Operation() == jetstream.KeyValuePut}, true
}

// setDrained records an agent's drain flag (the caller holds s.mu). The
// flag is kept by id, so a drain seen before the agent's first heartbeat
// holds once it comes.
func (s *Service) setDrained(id string, drained bool) {
	if drained {
		s.drainedIDs[id] = true
	} else {
		delete(s.drainedIDs, id)
	}
	if a := s.st.agents[id]; a != nil && a.drained != drained {
		a.drained = drained
		s.st.dirty = true // undrained: pending sessions may fit now
		s.log.Info().Str("agent_id", id).Bool("drained", drained).Msg("agent_drain")
	}
}

// serveAgents answers events.SchedulerAgentsSubject while this instance
// leads: its capacity ledger per agent, for bai admin agent list.
func (s *Service) serveAgents() (*nats.Subscription, error) {
	return s.cfg.NC.Subscribe(events.SchedulerAgentsSubject, func(m *nats.Msg) {
		if !s.leading.Load() {
			return
		}
		if !events.ServiceReplyAllowed(m.Reply) {
			s.log.Warn().Str("reply", m.Reply).Msg("reply_subject_refused")
			return
		}
		data, err := events.Marshal(s.agentsView(time.Now()))
		if err != nil {
			return
		}
		_ = m.Respond(data)
	})
}

// agentsView is the ledger per agent.
func (s *Service) agentsView(now time.Time) *events.SchedulerAgents {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := &events.SchedulerAgents{Agents: make(map[string]events.SchedulerAgent, len(s.st.agents))}
	count := map[string]int{}
	for _, sess := range s.st.sessions {
		if sess.agentID != "" && sess.status.HoldsCapacity() {
			count[sess.agentID]++
		}
	}
	for id, a := range s.st.agents {
		out.Agents[id] = events.SchedulerAgent{
			Used:     a.used.Map(),
			Sessions: count[id],
			Live:     !a.gone && !a.lost && now.Sub(a.seen) <= s.cfg.AgentTimeout,
			Lost:     a.lost,
			Drained:  a.drained,
		}
	}
	return out
}
