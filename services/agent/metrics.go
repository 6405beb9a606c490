package agent

import (
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the agent's (docs/operations.md, "Metrics"); nil when
// Config.Metrics is nil, and every method is then a no-op.
type metrics struct {
	output *prometheus.CounterVec
}

func (s *Service) newMetrics(r prometheus.Registerer) (*metrics, error) {
	if r == nil {
		return nil, nil
	}
	m := &metrics{
		output: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bai_agent_output_bytes_total", Help: "Kernel output bytes the agent published, per stream (stdout, stderr).",
			ConstLabels: prometheus.Labels{"agent": s.id},
		}, []string{"stream"}),
	}
	kernels := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "bai_agent_kernels", Help: "Kernels the agent holds.", ConstLabels: prometheus.Labels{"agent": s.id},
	}, func() float64 {
		s.mu.Lock()
		defer s.mu.Unlock()
		return float64(len(s.kernels))
	})
	for _, c := range []prometheus.Collector{m.output, kernels} {
		if err := r.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// wrote counts n output bytes published on stream.
func (m *metrics) wrote(stream string, n int) {
	if m == nil {
		return
	}
	m.output.WithLabelValues(stream).Add(float64(n))
}
