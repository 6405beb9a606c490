package events

import (
	"strings"
	"time"
)

// Admin API operations on agents and images (admin keypairs only),
// answered by the gateway.
const (
	OpAgentList    = "agent.list"    // every agent: capacity, used, sessions, heartbeat, state
	OpAgentDrain   = "agent.drain"   // the agent takes no new work; its sessions go on
	OpAgentUndrain = "agent.undrain" // the agent takes work again
	OpImageAdd     = "image.add"     // register an image (and aliases) in the image table
)

// Agent states in AgentStatus.State.
const (
	AgentReady    = "ready"    // beating, takes work
	AgentDraining = "draining" // drained, still running sessions
	AgentDrained  = "drained"  // drained, no sessions left: safe to stop
	AgentSilent   = "silent"   // no heartbeat within the scheduler's agent timeout
	AgentLost     = "lost"     // declared lost by the scheduler (agent-lost)
)

// AgentStatus is one agent as `bai admin agent list` shows it.
type AgentStatus struct {
	ID           string            `json:"id"`
	Host         string            `json:"host,omitempty"`
	Runtime      string            `json:"runtime,omitempty"`
	ScalingGroup string            `json:"scaling_group,omitempty"`
	Capacity     map[string]string `json:"capacity"`
	// Used and Sessions are the scheduler's capacity ledger: the slots
	// placed (or reserved) on the agent and the sessions holding them.
	// Used is nil when no scheduler answered (AgentListResponse.Ledger).
	Used         map[string]string `json:"used,omitempty"`
	Sessions     int               `json:"sessions"`
	Heartbeat    time.Time         `json:"heartbeat"`
	HeartbeatAge float64           `json:"heartbeat_age"` // seconds, by the gateway's clock
	State        string            `json:"state"`
	Drained      bool              `json:"drained,omitempty"`
	DrainedAt    *time.Time        `json:"drained_at,omitempty"`
	DrainedBy    string            `json:"drained_by,omitempty"` // the admin access key
}

// AgentListResponse answers agent.list, agents sorted by id.
type AgentListResponse struct {
	Agents []AgentStatus `json:"agents"`
	// Ledger is false when no scheduler answered: used, sessions and the
	// silent/lost states are unknown.
	Ledger bool `json:"ledger"`
}

// AgentRequest names one agent (agent.drain, agent.undrain); they answer
// the agent's AgentStatus.
type AgentRequest struct {
	ID string `json:"id"`
}

// DrainRecord is the value of an agent's drain key in the agents bucket.
type DrainRecord struct {
	By string    `json:"by"`
	At time.Time `json:"at"`
}

// drainPrefix starts the drain keys of the agents bucket. An agent's own
// key is its id (a token: no dots), so the two never meet, and an agent,
// which may write only its own key, cannot undrain itself.
const drainPrefix = "drain."

// DrainKey is agent id's drain key in the agents bucket (present: the
// agent is drained).
//
//	drain.<agent id>
func DrainKey(id string) string { return drainPrefix + id }

// DrainedAgent returns the agent id of a drain key of the agents bucket;
// false for any other key (a heartbeat).
func DrainedAgent(key string) (string, bool) {
	id, ok := strings.CutPrefix(key, drainPrefix)
	if !ok || !ValidToken(id) {
		return "", false
	}
	return id, true
}

// SchedulerAgentsSubject is where the leading scheduler answers with its
// view of the agents (SchedulerAgents), for agent.list. Standbys do not
// answer.
//
//	bai.scheduler.agents
const SchedulerAgentsSubject = "bai.scheduler.agents"

// SchedulerAgents is the leading scheduler's view of the agents.
type SchedulerAgents struct {
	Agents map[string]SchedulerAgent `json:"agents"`
}

// SchedulerAgent is one agent in the scheduler's capacity ledger.
type SchedulerAgent struct {
	Used     map[string]string `json:"used"`
	Sessions int               `json:"sessions"`
	Live     bool              `json:"live"` // beating within the agent timeout (drained or not)
	Lost     bool              `json:"lost"`
	Drained  bool              `json:"drained"`
}

// ImageAddRequest registers the full image reference Name (image.add)
// with optional aliases; it answers the image list.
type ImageAddRequest struct {
	Name    string   `json:"name"`
	Aliases []string `json:"aliases,omitempty"`
}
