// Command bai-scheduler places pending sessions on agents.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/bai-sh/bai/services/scheduler"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "bai-scheduler:", err)
		os.Exit(1)
	}
}

func run() error {
	url := flag.String("nats", envOr("BAI_NATS_URL", nats.DefaultURL), "NATS URL (user:password may be in it)")
	leaseTTL := flag.Duration("lease-ttl", 6*time.Second, "leader lease TTL; a standby takes over within TTL+TTL/3 of the leader's death")
	agentTimeout := flag.Duration("agent-timeout", 10*time.Second, "an agent silent this long is lost")
	policy := flag.String("policy", "drf", "queue policy of every scaling group: drf, fifo or lifo")
	selector := flag.String("selector", "dispersed", "agent selection: dispersed, concentrated or round-robin")
	skipAfter := flag.Int("skip-after", 3, "FIFO: rounds a head that fits nowhere blocks the queue before it is passed over (each session behind it waits one round at most)")
	pendingTimeout := flag.Duration("pending-timeout", 0, "cancel sessions pending longer (0: never)")
	flag.Parse()
	group := scheduler.GroupPolicy{Policy: scheduler.Policy(*policy), Selector: scheduler.Selector(*selector),
		SkipAfter: *skipAfter, PendingTimeout: *pendingTimeout}
	if err := group.Check(); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	nc, err := nats.Connect(*url, nats.Name("bai-scheduler"), nats.MaxReconnects(-1))
	if err != nil {
		return fmt.Errorf("connect %s: %w", *url, err)
	}
	defer nc.Close()
	log := zerolog.New(os.Stderr).With().Timestamp().Logger()
	svc, err := scheduler.New(scheduler.Config{NC: nc, Log: log, LeaseTTL: *leaseTTL, AgentTimeout: *agentTimeout,
		Default: group})
	if err != nil {
		return err
	}
	return svc.Run(ctx)
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}
