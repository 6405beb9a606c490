package registry

import (
	"context"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	bolt "go.etcd.io/bbolt"

	"github.com/bai-sh/bai/pkg/events"
)

// The registry's metrics (docs/operations.md, "Metrics"), read at each
// scrape from the projection and the session log.
var (
	descSessions = prometheus.NewDesc("bai_sessions", "Sessions in the registry by status (every key).", []string{"status"}, nil)
	descApplied  = prometheus.NewDesc("bai_registry_applied_seq", "Last session log sequence the registry has applied.", nil, nil)
	descLastSeq  = prometheus.NewDesc("bai_registry_log_last_seq", "Last sequence of the session log.", nil, nil)
	descLag      = prometheus.NewDesc("bai_registry_lag_events", "Events of the session log the registry has not applied yet (log last seq minus applied seq).", nil, nil)
)

// metricsWait bounds the session log info read at a scrape.
const metricsWait = 2 * time.Second

type collector struct{ s *Service }

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descSessions, descApplied, descLastSeq, descLag} {
		ch <- d
	}
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	s := c.s
	applied := s.applied.Load()
	ch <- prometheus.MustNewConstMetric(descApplied, prometheus.GaugeValue, float64(applied))
	if st := s.stream.Load(); st != nil {
		ctx, cancel := context.WithTimeout(context.Background(), metricsWait)
		info, err := (*st).Info(ctx)
		cancel()
		if err == nil {
			last := info.State.LastSeq
			ch <- prometheus.MustNewConstMetric(descLastSeq, prometheus.GaugeValue, float64(last))
			ch <- prometheus.MustNewConstMetric(descLag, prometheus.GaugeValue, float64(last-min(last, applied)))
		}
	}
	counts, err := s.statusCounts()
	if err != nil {
		return
	}
	for _, st := range events.AllStatuses {
		ch <- prometheus.MustNewConstMetric(descSessions, prometheus.GaugeValue, float64(counts[st]), string(st))
	}
}

// statusCounts sums the per-key, per-status counts of the projection.
func (s *Service) statusCounts() (map[events.Status]int64, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := map[events.Status]int64{}
	if s.st == nil {
		return out, nil
	}
	err := s.st.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketCounts).ForEach(func(k, v []byte) error {
			i := strings.LastIndexByte(string(k), '/')
			if i < 0 || len(v) != 8 {
				return nil
			}
			out[events.Status(k[i+1:])] += int64(getUint(tx.Bucket(bucketCounts), k))
			return nil
		})
	})
	return out, err
}

// registerMetrics adds the registry's collector to r (nil: none).
func (s *Service) registerMetrics(r prometheus.Registerer) error {
	if r == nil {
		return nil
	}
	return r.Register(collector{s})
}
