package svcflags

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/bai-sh/bai/pkg/events/streams"
)

// EnvReplicas is the environment variable of --replicas.
const EnvReplicas = "BAI_REPLICAS"

// replicasUsage is the help of --replicas, which the binaries that
// provision streams take.
func (c *Common) replicasUsage() string {
	return "replicas of the streams and buckets it makes or raises (never lowers); 0: 3 on a cluster of 3 or more nodes, else 1 (env " + EnvReplicas + ")"
}

// ParseReplicas reads --replicas (or BAI_REPLICAS): empty is 0.
func ParseReplicas(v string) (int, error) {
	if v == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 || n > 5 {
		return 0, fmt.Errorf("--replicas (%s) %q: want 0 (from the cluster size) or a count from 1 to 5", EnvReplicas, v)
	}
	return n, nil
}

// Connect connects to --nats as name (with --nats-creds), the extra
// options last, and waits until the streams are provisioned with opts,
// retrying while NATS is unreachable or electing.
func (c *Common) Connect(ctx context.Context, name string, log zerolog.Logger, opts streams.Options, extra ...nats.Option) (*nats.Conn, error) {
	nopts, err := c.NATSOptions(name, log)
	if err != nil {
		return nil, err
	}
	nc, err := nats.Connect(c.NATS, append(nopts, extra...)...)
	if err != nil {
		return nil, fmt.Errorf("connect %s: %w", redact(c.NATS), err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, err
	}
	err = streams.WaitProvision(ctx, js, opts, func(attempt int, wait time.Duration, err error) {
		log.Warn().Err(err).Int("attempt", attempt).Dur("retry_in", wait).Msg("nats_not_ready_waiting")
	})
	if err != nil {
		nc.Close()
		return nil, err
	}
	return nc, nil
}

// Main runs a service binary's run with a context that SIGINT and SIGTERM
// end, and exits 1 after "name: error" on stderr when it fails.
func Main(name string, run func(ctx context.Context, args []string, stderr io.Writer) error) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, name+":", err)
		os.Exit(1)
	}
}

// Setup is Logger, then StartMetrics: the service's log, the metrics
// registry its services register on (nil without --metrics-addr), and the
// stop of the endpoint.
func (c *Common) Setup(stderr io.Writer, service string) (zerolog.Logger, prometheus.Registerer, func(), error) {
	log, err := c.Logger(stderr, service)
	if err != nil {
		return log, nil, nil, err
	}
	metrics, stop, err := c.StartMetrics(log)
	return log, metrics, stop, err
}

// StartMetrics serves --metrics-addr: the registry the services register
// on, and a stop for the endpoint. Without --metrics-addr both are nil
// (no metrics, a no-op stop).
func (c *Common) StartMetrics(log zerolog.Logger) (prometheus.Registerer, func(), error) {
	if c.MetricsAddr == "" {
		return nil, func() {}, nil
	}
	reg := NewRegistry()
	m, err := ServeMetrics(c.MetricsAddr, reg, log)
	if err != nil {
		return nil, nil, err
	}
	return reg, func() { _ = m.Close() }, nil
}
