package scheduler

import (
	"context"
	"testing"
	"time"

	"github.com/bai-sh/bai/pkg/events"
)

// setAgentsMaxBytes sets the agents' bucket's byte limit: at its current
// size the bucket refuses every write (as on a full disk), -1 lifts it.
func (c *cluster) setAgentsMaxBytes(full bool) {
	c.t.Helper()
	ctx := context.Background()
	st, err := c.js.Stream(ctx, "KV_bai_agents")
	if err != nil {
		c.t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		c.t.Fatal(err)
	}
	cfg := info.Config
	cfg.MaxBytes = -1
	if full {
		cfg.MaxBytes = int64(info.State.Bytes)
	}
	if _, err := c.js.UpdateStream(ctx, cfg); err != nil {
		c.t.Fatal(err)
	}
}

// While the agents' bucket cannot store, the heartbeats of a beating agent
// are lost: the scheduler must not take that for the agent's silence
// (before: every running session ended as agent-lost when the disk filled).
// Once the bucket stores again, an agent that really stops is still lost.
func TestAgentNotLostWhileTheBucketCannotStore(t *testing.T) {
	c := newCluster(t)
	timeout := 300 * time.Millisecond
	c.scheduler(Config{AgentTimeout: timeout})
	a := c.agent("agent-a", map[string]string{"cpu": "2", "mem": "4g"}, nil)
	c.enqueue("AKA", "run", cpu1, nil)
	c.waitStatus(10*time.Second, events.StatusRunning, "run")

	c.setAgentsMaxBytes(true)
	kv, err := c.js.KeyValue(context.Background(), "bai_agents")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(context.Background(), "agent-x", []byte("{}")); err == nil {
		t.Fatal("the bucket still stores")
	}
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for end := time.Now().Add(10 * timeout); time.Now().Before(end); <-tick.C {
		if st := c.obs.session("run").status; st != events.StatusRunning {
			t.Fatalf("the session of a beating agent went %s while its heartbeats could not be stored", st)
		}
	}
	c.setAgentsMaxBytes(false)
	// Storing again: the agent beats, nothing ends.
	for end := time.Now().Add(3 * timeout); time.Now().Before(end); <-tick.C {
		if st := c.obs.session("run").status; st != events.StatusRunning {
			t.Fatalf("the session went %s once the bucket stored again", st)
		}
	}
	a.stop()
	c.waitStatus(10*time.Second, events.StatusTerminated, "run")
	if r := c.obs.session("run").reason; r != events.ReasonAgentLost {
		t.Fatalf("ended with reason %q", r)
	}
}
