package scheduler

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/bai-sh/bai/internal/natstest"
	"github.com/bai-sh/bai/pkg/events"
	"github.com/bai-sh/bai/pkg/events/streams"
)

// TestNATSRestartIsNotAgentLost: the NATS server goes down for longer
// than the agent timeout while a scheduler runs with agents that have
// sessions, and comes back (same store, same port). The agents beat again
// within the timeout of the server's return (one of them only after the
// scheduler reads again): no agent is declared lost, every session keeps
// running. An agent that then really stops is still declared lost.
func TestNATSRestartIsNotAgentLost(t *testing.T) {
	opts := natstest.Options(t.TempDir())
	opts.Port = natstest.FreePorts(t, 1)[0]
	ns := natstest.RunServerWithOptions(t, opts)
	nc := natstest.Connect(t, ns)
	js, _ := jetstream.New(nc)
	if err := streams.Provision(context.Background(), js, streams.Options{}); err != nil {
		t.Fatal(err)
	}
	c := &cluster{t: t, ns: ns, nc: nc, js: js, agents: map[string]*simAgent{}, kernels: map[string]int{}}
	c.obs = newObserver(t, js)

	// Longer than the test connections' reconnect wait (nats.go's 2s):
	// an agent back on the network beats again within it.
	timeout := 4 * time.Second
	s := c.scheduler(Config{AgentTimeout: timeout})
	a := c.agent("agent-a", map[string]string{"cpu": "2", "mem": "4g"}, nil)
	b := c.agent("agent-b", map[string]string{"cpu": "2", "mem": "4g"}, nil)
	for _, sid := range []string{"s1", "s2", "s3", "s4"} {
		c.enqueue("AKA", sid, cpu1, nil)
	}
	c.waitStatus(10*time.Second, events.StatusRunning, "s1", "s2", "s3", "s4")

	// agent-b is cut off first (its host partitioned), then NATS stops.
	b.stop()
	ns.Shutdown()
	ns.WaitForShutdown()
	down := time.Now()
	natstest.CheckFor(t, 10*time.Second, 50*time.Millisecond, func() error {
		if d := time.Since(down); d < 3*timeout/2 {
			return fmt.Errorf("NATS down for %s only", d)
		}
		return nil
	})
	opts2 := natstest.Options(opts.StoreDir)
	opts2.Port = opts.Port
	c.ns = natstest.RunServerWithOptions(t, opts2)
	// The scheduler is back and leads before agent-b is back.
	natstest.CheckFor(t, 20*time.Second, 10*time.Millisecond, func() error {
		if !s.svc.cfg.NC.IsConnected() || !s.svc.Leader() {
			return fmt.Errorf("scheduler not back (connected %v, leader %v)", s.svc.cfg.NC.IsConnected(), s.svc.Leader())
		}
		return nil
	})
	natstest.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		if _, err := s.svc.agents.Status(context.Background()); err != nil {
			return err
		}
		return nil
	})
	b.start()
	// A whole timeout and more after the return: nothing was lost.
	back := time.Now()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for ; time.Since(back) < 3*timeout/2; <-tick.C {
		for _, sid := range []string{"s1", "s2", "s3", "s4"} {
			if st := c.obs.session(sid).status; st != events.StatusRunning {
				t.Fatalf("session %s went %s (%s) after NATS came back", sid, st, c.obs.session(sid).reason)
			}
		}
	}
	// Real silence still counts.
	a.stop()
	var onA []string
	for _, sid := range []string{"s1", "s2", "s3", "s4"} {
		if c.obs.session(sid).agent == "agent-a" {
			onA = append(onA, sid)
		}
	}
	if len(onA) == 0 {
		t.Fatal("no session on agent-a")
	}
	c.waitStatus(20*time.Second, events.StatusTerminated, onA...)
	if r := c.obs.session(onA[0]).reason; r != events.ReasonAgentLost {
		t.Fatalf("ended with reason %q", r)
	}
}
