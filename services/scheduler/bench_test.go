package scheduler

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/bai-sh/bai/internal/natstest"
	"github.com/bai-sh/bai/pkg/events"
	"github.com/bai-sh/bai/pkg/events/streams"
)

// BenchmarkPlacements measures placements per second: b.N pending
// sessions, 200 simulated agents (heartbeats in the real KV), one leader
// publishing each placement with its precondition on the real JetStream
// log, and the observer checking every instant.
func BenchmarkPlacements(b *testing.B) {
	c := newCluster(b)
	kv, err := c.js.KeyValue(context.Background(), streams.Agents)
	if err != nil {
		b.Fatal(err)
	}
	const agents = 200
	for i := range agents {
		id := fmt.Sprintf("agent-%03d", i)
		capacity := map[string]string{"cpu": "1000", "mem": "4000g"}
		c.obs.setCapacity(id, capacity)
		data, _ := json.Marshal(events.AgentInfo{V: 1, ID: id, Epoch: 1, ScalingGroup: "default", Capacity: capacity, Heartbeat: time.Now()})
		if _, err := kv.Put(context.Background(), id, data); err != nil {
			b.Fatal(err)
		}
	}
	c.enqueueAsync("AKA", sids("s", b.N), cpu1)
	b.ResetTimer()
	s := c.scheduler(Config{AgentTimeout: time.Hour, Tick: time.Second})
	natstest.CheckFor(b, 10*time.Minute, time.Millisecond, func() error {
		if n := c.obs.count()[events.StatusScheduled]; n < b.N {
			return fmt.Errorf("%d placed", n)
		}
		return nil
	})
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "placements/s")
	b.ReportMetric(float64(s.svc.Snapshot().Refused), "refused")
	// The scheduler applies a plan once all of it is acknowledged: the
	// observer may see the last placements first.
	natstest.CheckFor(b, 10*time.Second, time.Millisecond, func() error {
		if p := s.svc.Snapshot().Pending; p != 0 {
			return fmt.Errorf("%d pending", p)
		}
		return nil
	})
}
