package scheduler

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/bai-sh/bai/internal/natstest"
	"github.com/bai-sh/bai/pkg/events"
	"github.com/bai-sh/bai/pkg/events/streams"
)

// TestDrainedAgentTakesNoNewWork: with agent-a drained, new sessions go
// to agent-b only, and wait when b is full, while a's running session
// goes on; undrained, a takes the waiting ones. The leader answers the
// ledger view on events.SchedulerAgentsSubject.
func TestDrainedAgentTakesNoNewWork(t *testing.T) {
	c := newCluster(t)
	c.scheduler(Config{Default: GroupPolicy{Selector: Concentrated}})
	c.agent("agent-a", map[string]string{"cpu": "2", "mem": "4g"}, nil)
	c.enqueue("AKA", "before", cpu1, nil)
	c.waitStatus(10*time.Second, events.StatusRunning, "before")
	if got := c.obs.session("before").agent; got != "agent-a" {
		t.Fatalf("placed on %s", got)
	}
	ctx := context.Background()
	kv, err := c.js.KeyValue(ctx, streams.Agents)
	if err != nil {
		t.Fatal(err)
	}
	rec, _ := json.Marshal(events.DrainRecord{By: "AKADMIN", At: time.Now()})
	if _, err := kv.Put(ctx, events.DrainKey("agent-a"), rec); err != nil {
		t.Fatal(err)
	}
	// The leader answers on a service inbox only (the gateway's).
	gw := natstest.Connect(t, c.ns, nats.CustomInboxPrefix(events.ServiceInboxPrefix("gateway")))
	view := func() events.SchedulerAgents {
		t.Helper()
		msg, err := gw.Request(events.SchedulerAgentsSubject, nil, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		var v events.SchedulerAgents
		if err := json.Unmarshal(msg.Data, &v); err != nil {
			t.Fatal(err)
		}
		return v
	}
	natstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if a := view().Agents["agent-a"]; !a.Drained {
			return fmt.Errorf("agent-a not drained yet: %+v", a)
		}
		return nil
	})
	c.agent("agent-b", map[string]string{"cpu": "1", "mem": "4g"}, nil)
	for _, sid := range []string{"n1", "n2"} {
		c.enqueue("AKA", sid, cpu1, nil)
	}
	natstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if st := c.obs.session("n1").status; st != events.StatusRunning && c.obs.session("n2").status != events.StatusRunning {
			return fmt.Errorf("neither new session runs")
		}
		return nil
	})
	waiting := "n2"
	if c.obs.session("n2").status == events.StatusRunning {
		waiting = "n1"
	}
	// A second of rounds (the tick is 20ms) with room on agent-a only.
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for end := time.Now().Add(time.Second); time.Now().Before(end); <-tick.C {
		if s := c.obs.session(waiting); s.status != events.StatusPending {
			t.Fatalf("%s went %s on %s while agent-a is drained", waiting, s.status, s.agent)
		}
	}
	for _, sid := range []string{"n1", "n2"} {
		if s := c.obs.session(sid); s.status == events.StatusRunning && s.agent != "agent-b" {
			t.Fatalf("%s placed on drained %s", sid, s.agent)
		}
	}
	if st := c.obs.session("before").status; st != events.StatusRunning {
		t.Fatalf("the drained agent's session went %s", st)
	}
	if a := view().Agents["agent-a"]; a.Sessions != 1 || a.Used["cpu"] != "1" || !a.Live {
		t.Fatalf("ledger view of agent-a: %+v", a)
	}
	if err := kv.Delete(ctx, events.DrainKey("agent-a")); err != nil {
		t.Fatal(err)
	}
	c.waitStatus(10*time.Second, events.StatusRunning, waiting)
	if got := c.obs.session(waiting).agent; got != "agent-a" {
		t.Fatalf("%s placed on %s after undrain", waiting, got)
	}
}
