package events

import (
	"strings"
	"time"
)

// OpAdminHealth is the gateway's health report (admins only): every
// service instance that answers micro's $SRV.STATS, every agent of the
// agents bucket, every stream.
const OpAdminHealth = "admin.health"

// HealthInboxPrefix is where the services answer the gateway's health
// pings ($SRV.PING, $SRV.STATS): an inbox of its own, apart from the
// gateway's service inbox, so that an agent allowed to answer there can
// answer nothing else the gateway asked.
//
//	_INBOX_HEALTH.<id>
const HealthInboxPrefix = "_INBOX_HEALTH"

// MicroStatusSubject is where a service's status endpoint answers (nats
// micro, the same data as the endpoint's in $SRV.STATS): the scheduler's
// and each agent's (the registry and the gateway say theirs in STATS).
//
//	$SRV.STATUS.<service>[.<id>]
func MicroStatusSubject(service, id string) string {
	if id == "" {
		return "$SRV.STATUS." + service
	}
	return "$SRV.STATUS." + service + "." + id
}

// Health states.
const (
	HealthOK       = "ok"
	HealthDegraded = "degraded" // works, with a problem named in Problems
	HealthDown     = "down"
)

// HealthResponse answers OpAdminHealth.
type HealthResponse struct {
	// Healthy is true when Problems is empty.
	Healthy  bool            `json:"healthy"`
	Problems []string        `json:"problems"`
	Services []ServiceHealth `json:"services"`
	Agents   []AgentHealth   `json:"agents"`
	Streams  []StreamHealth  `json:"streams"`
	Time     time.Time       `json:"time"`
}

// ServiceHealth is one service instance that answered $SRV.STATS.
type ServiceHealth struct {
	Name     string    `json:"name"`
	ID       string    `json:"id"`
	Version  string    `json:"version"`
	State    string    `json:"state"`
	Started  time.Time `json:"started"`
	Requests int       `json:"requests"`
	Errors   int       `json:"errors"`
	// Status is what the service says of itself (its status endpoint's
	// data: a scheduler's leadership, an agent's id and kernels, the
	// registry's applied sequence), flattened to words.
	Status map[string]string `json:"status,omitempty"`
}

// AgentHealth is one agent of the agents bucket.
type AgentHealth struct {
	ID           string  `json:"id"`
	State        string  `json:"state"` // AgentStatus.State: ready, silent, lost, draining, drained
	HeartbeatAge float64 `json:"heartbeat_age_seconds"`
	// Answered: its micro service answered the ping.
	Answered bool `json:"answered"`
}

// StreamHealth is one JetStream stream (a KV bucket is a stream too).
type StreamHealth struct {
	Name     string `json:"name"`
	State    string `json:"state"`
	Messages uint64 `json:"messages"`
	Bytes    uint64 `json:"bytes"`
	Leader   string `json:"leader,omitempty"`
	Replicas int    `json:"replicas"`
	// Lag is the most operations a replica is behind the leader (0 on a
	// single server).
	Lag uint64 `json:"lag"`
	// Error says why its state is not ok.
	Error string `json:"error,omitempty"`
}

// HealthReplyAllowed reports whether reply is a health inbox, the only
// place a status endpoint answers.
func HealthReplyAllowed(reply string) bool {
	rest, ok := strings.CutPrefix(reply, HealthInboxPrefix+".")
	return ok && rest != "" && !strings.ContainsAny(rest, "*> \t")
}
