package gateway

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/micro"

	"github.com/bai-sh/bai/pkg/events"
	"github.com/bai-sh/bai/pkg/events/streams"
)

// TestHealthNamesWhatIsMissing: with only a gateway and an agent whose
// heartbeat is in the bucket but whose micro service never answers, the
// report is unhealthy and says why: no registry, scheduler or agent
// service answered, the agent did not answer its ping. Once a bai-agent
// service of that id answers, that problem is gone. A non-admin is
// refused.
func TestHealthNamesWhatIsMissing(t *testing.T) {
	f := start(t, func(c *Config) { c.AdminAccessKey = ak; c.IdleTimeout = -1 })
	ctx := context.Background()
	kv, err := f.js.KeyValue(ctx, streams.Agents)
	if err != nil {
		t.Fatal(err)
	}
	hb, _ := json.Marshal(events.AgentInfo{ID: "ghost", Heartbeat: time.Now().UTC(), Capacity: map[string]string{"cpu": "1"}})
	if _, err := kv.Put(ctx, "ghost", hb); err != nil {
		t.Fatal(err)
	}
	var h events.HealthResponse
	if err := f.call(t, events.OpAdminHealth, struct{}{}, &h); err != nil {
		t.Fatal(err)
	}
	problems := strings.Join(h.Problems, "\n")
	for _, want := range []string{"no bai-registry answered", "no bai-scheduler answered", "no bai-agent answered", "agent ghost did not answer the ping"} {
		if !strings.Contains(problems, want) {
			t.Errorf("problems lack %q: %v", want, h.Problems)
		}
	}
	if h.Healthy || strings.Contains(problems, "bai-gateway") {
		t.Errorf("healthy %v, problems %v", h.Healthy, h.Problems)
	}
	if len(h.Agents) != 1 || h.Agents[0].ID != "ghost" || h.Agents[0].Answered {
		t.Errorf("agents %+v", h.Agents)
	}
	if len(h.Streams) != len(healthStreams) {
		t.Errorf("streams %+v", h.Streams)
	}

	svc, err := micro.AddService(f.nc, micro.Config{Name: "bai-agent", Version: "0.1.0", Metadata: map[string]string{"agent_id": "ghost"}})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = svc.Stop() }()
	h = events.HealthResponse{}
	if err := f.call(t, events.OpAdminHealth, struct{}{}, &h); err != nil {
		t.Fatal(err)
	}
	if p := strings.Join(h.Problems, "\n"); strings.Contains(p, "ghost") || strings.Contains(p, "no bai-agent") || len(h.Agents) != 1 || !h.Agents[0].Answered {
		t.Errorf("after the agent answers: %v %+v", h.Problems, h.Agents)
	}

	if err := f.callAs(t, "AKUSER", events.OpAdminHealth, struct{}{}, &h); events.CodeOf(err) != events.CodeForbidden {
		t.Fatalf("health as a user: %v", err)
	}
}
