package scheduler

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/bai-sh/bai/pkg/slots"
)

// The scheduler's metrics (docs/operations.md, "Metrics"). The counters
// count what this instance did; the gauges are read at each scrape from
// its view of the log and the agents (every instance replays both, the
// leader alone places: bai_scheduler_leader says which).
var (
	descQueue     = prometheus.NewDesc("bai_scheduler_queue_depth", "Pending sessions per scaling group.", []string{"scaling_group"}, nil)
	descLeader    = prometheus.NewDesc("bai_scheduler_leader", "1 while this scheduler instance holds the lease and places.", nil, nil)
	descCapacity  = prometheus.NewDesc("bai_agent_capacity", "An agent's capacity per slot (cpu in cores, mem in bytes, ...).", []string{"agent", "slot"}, nil)
	descUsed      = prometheus.NewDesc("bai_agent_used", "The slots placed or reserved on an agent, per slot.", []string{"agent", "slot"}, nil)
	descHeartbeat = prometheus.NewDesc("bai_agent_heartbeat_age_seconds", "Seconds since the agent's last heartbeat.", []string{"agent"}, nil)
	descLost      = prometheus.NewDesc("bai_agent_lost", "1 while the agent is declared lost.", []string{"agent"}, nil)
)

// metrics are nil when Config.Metrics is nil; every method is then a
// no-op.
type metrics struct {
	placements *prometheus.CounterVec
	latency    *prometheus.HistogramVec
	refused    prometheus.CounterFunc
}

func (s *Service) newMetrics(r prometheus.Registerer) (*metrics, error) {
	if r == nil {
		return nil, nil
	}
	m := &metrics{
		placements: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bai_placements_total", Help: "Sessions placed on an agent (session_scheduled stored), per scaling group.",
		}, []string{"scaling_group"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "bai_placement_latency_seconds", Help: "From a session's enqueue to its placement, per scaling group.",
			Buckets: []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800},
		}, []string{"scaling_group"}),
		refused: prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "bai_placements_refused_total", Help: "Ledger entries and placements the log refused (a stale view, another scheduler).",
		}, func() float64 { return float64(s.refused.Load()) }),
	}
	for _, c := range []prometheus.Collector{m.placements, m.latency, m.refused, collector{s}} {
		if err := r.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// placed counts one stored placement of a session of group enqueued
// wait ago.
func (m *metrics) placed(group string, wait time.Duration) {
	if m == nil {
		return
	}
	m.placements.WithLabelValues(group).Inc()
	m.latency.WithLabelValues(group).Observe(max(wait, 0).Seconds())
}

type collector struct{ s *Service }

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descQueue, descLeader, descCapacity, descUsed, descHeartbeat, descLost} {
		ch <- d
	}
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	s := c.s
	leader := 0.0
	if s.leading.Load() {
		leader = 1
	}
	ch <- prometheus.MustNewConstMetric(descLeader, prometheus.GaugeValue, leader)
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	depth := map[string]int{}
	for _, sess := range s.st.pending {
		depth[sess.spec.ScalingGroup]++
	}
	for g, n := range depth {
		ch <- prometheus.MustNewConstMetric(descQueue, prometheus.GaugeValue, float64(n), g)
	}
	for id, a := range s.st.agents {
		if a.gone {
			continue
		}
		for k, q := range a.capacity {
			ch <- prometheus.MustNewConstMetric(descCapacity, prometheus.GaugeValue, slotValue(k, q), id, k)
		}
		for k := range a.capacity {
			ch <- prometheus.MustNewConstMetric(descUsed, prometheus.GaugeValue, slotValue(k, a.used[k]), id, k)
		}
		ch <- prometheus.MustNewConstMetric(descHeartbeat, prometheus.GaugeValue, max(now.Sub(a.seen), 0).Seconds(), id)
		lost := 0.0
		if a.lost {
			lost = 1
		}
		ch <- prometheus.MustNewConstMetric(descLost, prometheus.GaugeValue, lost, id)
	}
}

// slotValue is q in the slot's unit: bytes for a byte-valued slot, a
// count (with fractions) for the others.
func slotValue(key string, q slots.Quantity) float64 {
	if slots.IsBytes(key) {
		return float64(q)
	}
	return float64(q) / slots.Scale
}
