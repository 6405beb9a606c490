package server

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/bai-sh/bai/pkg/events"
	"github.com/bai-sh/bai/tools/bai/cli"
)

// TestAdminHealth (issue 15): `bai admin health` against a real server
// lists the gateway, registry, scheduler and agent instances (each one
// answered micro's $SRV.STATS), the agent with its heartbeat, and the
// streams with their state; it exits 0 when all is well. A non-admin is
// refused with a clear error.
func TestAdminHealth(t *testing.T) {
	r := startServerWith(t, Config{AgentCapacity: map[string]string{"cpu": "2", "mem": "2g"}, IdleTimeout: -1})
	r.ok(t, "run", "--rm", "-c", "print(1)", "python")
	var h events.HealthResponse
	if err := json.Unmarshal([]byte(r.ok(t, "admin", "health", "--output", "json")), &h); err != nil {
		t.Fatal(err)
	}
	if !h.Healthy || len(h.Problems) != 0 {
		t.Fatalf("unhealthy: %v", h.Problems)
	}
	names := map[string]events.ServiceHealth{}
	for _, s := range h.Services {
		if s.State != events.HealthOK || s.ID == "" {
			t.Errorf("service %+v", s)
		}
		names[s.Name] = s
	}
	for _, n := range []string{"bai-gateway", "bai-registry", "bai-scheduler", "bai-agent"} {
		if _, ok := names[n]; !ok {
			t.Errorf("no %s in %+v", n, h.Services)
		}
	}
	if st := names["bai-scheduler"].Status; st["leader"] != "true" || st["placed"] != "1" {
		t.Errorf("scheduler status %v", st)
	}
	if st := names["bai-registry"].Status; st["applied_seq"] == "" || st["applied_seq"] == "0" {
		t.Errorf("registry status %v", st)
	}
	agentID := r.list(t)[0].AgentID
	if st := names["bai-agent"].Status; st["agent_id"] != agentID {
		t.Errorf("agent status %v, want agent %s", st, agentID)
	}
	if len(h.Agents) != 1 || h.Agents[0].ID != agentID || h.Agents[0].State != events.AgentReady || !h.Agents[0].Answered ||
		h.Agents[0].HeartbeatAge < 0 || h.Agents[0].HeartbeatAge > 30 {
		t.Errorf("agents %+v", h.Agents)
	}
	streams := map[string]events.StreamHealth{}
	for _, s := range h.Streams {
		streams[s.Name] = s
	}
	for _, n := range []string{"BAI_SESSIONS", "BAI_WORK", "BAI_OUTPUT", "KV_bai_agents", "KV_bai_keypairs"} {
		s, ok := streams[n]
		if !ok || s.State != events.HealthOK || s.Replicas != 1 {
			t.Errorf("stream %s: %+v (present %v)", n, s, ok)
		}
	}
	if s := streams["BAI_SESSIONS"]; s.Messages == 0 || s.Bytes == 0 {
		t.Errorf("session log %+v", s)
	}

	out := r.ok(t, "admin", "health")
	for _, want := range []string{"SERVICE", "bai-gateway", "bai-registry", "bai-scheduler", "bai-agent", "AGENT", agentID, "STREAM", "BAI_SESSIONS", "KV_bai_agents", "\nhealthy\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("health table lacks %q:\n%s", want, out)
		}
	}

	tn := r.newTenant(t, "user", "")
	if code, out, errOut := r.baiAs(t, tn, "admin", "health"); code == cli.ExitOK || out != "" || !strings.Contains(errOut, "not an admin") {
		t.Fatalf("health as a user: exit %d, %q %q", code, out, errOut)
	}
	if code, _, errOut := r.bai(t, "admin", "health", "extra"); code != cli.ExitUsage {
		t.Fatalf("health with an argument: exit %d %q", code, errOut)
	}
}
