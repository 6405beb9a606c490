// Command bai-scheduler places pending sessions on agents.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/bai-sh/bai/pkg/events"
	"github.com/bai-sh/bai/pkg/events/streams"
	"github.com/bai-sh/bai/services/scheduler"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "bai-scheduler:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("bai-scheduler", flag.ContinueOnError)
	fs.SetOutput(stderr)
	url := fs.String("nats", envOr("BAI_NATS_URL", nats.DefaultURL), "NATS URL (user:password may be in it)")
	leaseTTL := fs.Duration("lease-ttl", 6*time.Second, "leader lease TTL; a standby takes over within TTL+TTL/3 of the leader's death")
	agentTimeout := fs.Duration("agent-timeout", 10*time.Second, "an agent silent this long is lost")
	policy := fs.String("policy", "drf", "queue policy of every scaling group: drf, fifo or lifo")
	selector := fs.String("selector", "dispersed", "agent selection: dispersed, concentrated or round-robin")
	skipAfter := fs.Int("skip-after", 3, "FIFO: rounds a head that fits nowhere blocks the queue before it is passed over (each session behind it waits one round at most)")
	pendingTimeout := fs.Duration("pending-timeout", 0, "cancel sessions pending longer (0: never)")
	replicasFlag := fs.String("replicas", os.Getenv("BAI_REPLICAS"), "replicas of the streams and buckets it makes or raises (never lowers); 0: 3 on a cluster of 3 or more nodes, else 1 (env BAI_REPLICAS)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	replicas, err := parseReplicas(*replicasFlag)
	if err != nil {
		return err
	}
	group := scheduler.GroupPolicy{Policy: scheduler.Policy(*policy), Selector: scheduler.Selector(*selector),
		SkipAfter: *skipAfter, PendingTimeout: *pendingTimeout}
	if err := group.Check(); err != nil {
		return err
	}
	log := zerolog.New(stderr).With().Timestamp().Logger()
	nc, err := nats.Connect(*url, append(natsOptions("bai-scheduler", log),
		// Its NATS permissions (package perms) let it read only this inbox.
		nats.CustomInboxPrefix(events.ServiceInboxPrefix("scheduler")))...)
	if err != nil {
		return fmt.Errorf("connect %s: %w", *url, err)
	}
	defer nc.Close()
	opts := streams.Options{Replicas: replicas}
	if err := waitNATS(ctx, nc, opts, log); err != nil {
		return err
	}
	svc, err := scheduler.New(scheduler.Config{NC: nc, Log: log, LeaseTTL: *leaseTTL, AgentTimeout: *agentTimeout,
		Default: group, Streams: opts})
	if err != nil {
		return err
	}
	return svc.Run(ctx)
}

// natsOptions connect for good: the first connection is retried while
// the server is unreachable, and a lost one reconnects without end, each
// with a log line.
func natsOptions(name string, log zerolog.Logger) []nats.Option {
	return []nats.Option{
		nats.Name(name), nats.MaxReconnects(-1), nats.RetryOnFailedConnect(true), nats.ReconnectWait(time.Second),
		nats.ConnectHandler(func(nc *nats.Conn) { log.Info().Str("server", nc.ConnectedUrlRedacted()).Msg("nats_connected") }),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) { log.Warn().Err(err).Msg("nats_disconnected") }),
		nats.ReconnectHandler(func(nc *nats.Conn) { log.Info().Str("server", nc.ConnectedUrlRedacted()).Msg("nats_reconnected") }),
		nats.ReconnectErrHandler(func(_ *nats.Conn, err error) { log.Warn().Err(err).Msg("nats_unreachable_retrying") }),
	}
}

// waitNATS returns once the streams are provisioned, retrying while NATS
// is unreachable or electing.
func waitNATS(ctx context.Context, nc *nats.Conn, opts streams.Options, log zerolog.Logger) error {
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	return streams.WaitProvision(ctx, js, opts, func(attempt int, wait time.Duration, err error) {
		log.Warn().Err(err).Int("attempt", attempt).Dur("retry_in", wait).Msg("nats_not_ready_waiting")
	})
}

// parseReplicas reads --replicas (or BAI_REPLICAS): empty is 0.
func parseReplicas(v string) (int, error) {
	if v == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 || n > 5 {
		return 0, fmt.Errorf("--replicas (BAI_REPLICAS) %q: want 0 (from the cluster size) or a count from 1 to 5", v)
	}
	return n, nil
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}
