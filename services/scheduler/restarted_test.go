package scheduler

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/bai-sh/bai/internal/natstest"
	"github.com/bai-sh/bai/pkg/events"
	"github.com/bai-sh/bai/pkg/events/streams"
)

// checks lists the epochs of the kernel_checks on session sid's log.
func (c *cluster) checks(ak, sid string) []uint64 {
	c.t.Helper()
	filter, _ := events.SessionFilter(ak, sid)
	cons, err := c.js.OrderedConsumer(context.Background(), streams.Sessions, jetstream.OrderedConsumerConfig{FilterSubjects: []string{filter}})
	if err != nil {
		c.t.Fatal(err)
	}
	var epochs []uint64
	for {
		b, err := cons.FetchNoWait(100)
		if err != nil {
			c.t.Fatal(err)
		}
		n := 0
		for m := range b.Messages() {
			n++
			var ev events.Event
			if err := json.Unmarshal(m.Data(), &ev); err != nil {
				c.t.Fatal(err)
			}
			if ev.Name == events.EventKernelCheck {
				if ev.AgentID != "agent-a" {
					c.t.Errorf("check addressed to %q", ev.AgentID)
				}
				epochs = append(epochs, ev.AgentEpoch)
			}
		}
		if n == 0 {
			return epochs
		}
	}
}

// An agent that comes back with a new epoch gets one kernel_check per
// session it held that it has not spoken of under that epoch; a session
// it started under the new epoch gets none until the next restart.
func TestRestartedAgentGetsKernelChecks(t *testing.T) {
	c := newCluster(t)
	c.scheduler(Config{AgentTimeout: 2 * time.Second, Tick: 20 * time.Millisecond})
	a := c.agent("agent-a", map[string]string{"cpu": "4", "mem": "8g"}, nil)
	c.enqueue("AKA", "old", cpu1, nil)
	c.waitStatus(10*time.Second, events.StatusRunning, "old")
	if got := c.checks("AKA", "old"); len(got) != 0 {
		t.Fatalf("checks before any restart: %v", got)
	}
	restart := func(epoch uint64) {
		a.stop()
		a.epoch = epoch
		a.start()
	}
	restart(2)
	natstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if got := c.checks("AKA", "old"); !slices.Equal(got, []uint64{2}) {
			return fmt.Errorf("checks of a session placed at epoch 1: %v", got)
		}
		return nil
	})
	c.enqueue("AKA", "new", cpu1, nil)
	c.waitStatus(10*time.Second, events.StatusRunning, "new")
	restart(3)
	natstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		old, nw := c.checks("AKA", "old"), c.checks("AKA", "new")
		if !slices.Equal(old, []uint64{2, 3}) || !slices.Equal(nw, []uint64{3}) {
			return fmt.Errorf("checks: old %v, new %v", old, nw)
		}
		return nil
	})
}
