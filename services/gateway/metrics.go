package gateway

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/bai-sh/bai/pkg/events"
)

// metrics are the gateway's (docs/operations.md, "Metrics"); nil when
// Config.Metrics is nil, and every method is then a no-op.
type metrics struct {
	admitted prometheus.Counter
	refused  *prometheus.CounterVec
}

func newMetrics(r prometheus.Registerer) (*metrics, error) {
	if r == nil {
		return nil, nil
	}
	m := &metrics{
		admitted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "bai_admissions_total", Help: "Session creates the gateway admitted into the log.",
		}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bai_admissions_refused_total", Help: "Session creates the gateway refused, by reason (the error code of the answer).",
		}, []string{"reason"}),
	}
	for _, c := range []prometheus.Collector{m.admitted, m.refused} {
		if err := r.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// created counts the outcome of one create.
func (m *metrics) created(err error) {
	if m == nil {
		return
	}
	if err == nil {
		m.admitted.Inc()
		return
	}
	m.refused.WithLabelValues(events.CodeOf(err)).Inc()
}
