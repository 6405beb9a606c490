// Command bai-scheduler places pending sessions on agents.
//
// It takes the common flags of every bai binary (package svcflags:
// --nats, --nats-creds, --log-level, --log-format, --metrics-addr,
// --replicas and their BAI_* variables).
package main

import (
	"context"
	"errors"
	"flag"
	"io"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/bai-sh/bai/pkg/events"
	"github.com/bai-sh/bai/pkg/events/streams"
	"github.com/bai-sh/bai/pkg/svcflags"
	"github.com/bai-sh/bai/services/scheduler"
)

func main() { svcflags.Main("bai-scheduler", run) }

func run(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("bai-scheduler", flag.ContinueOnError)
	fs.SetOutput(stderr)
	common := svcflags.Register(fs, svcflags.Options{NATS: true, Replicas: true})
	leaseTTL := fs.Duration("lease-ttl", 6*time.Second, "leader lease TTL; a standby takes over within TTL+TTL/3 of the leader's death")
	agentTimeout := fs.Duration("agent-timeout", 10*time.Second, "an agent silent this long is lost")
	policy := fs.String("policy", "drf", "queue policy of every scaling group: drf, fifo or lifo")
	selector := fs.String("selector", "dispersed", "agent selection: dispersed, concentrated or round-robin")
	skipAfter := fs.Int("skip-after", 3, "FIFO: rounds a head that fits nowhere blocks the queue before it is passed over (each session behind it waits one round at most)")
	pendingTimeout := fs.Duration("pending-timeout", 0, "cancel sessions pending longer (0: never)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	replicas, err := svcflags.ParseReplicas(common.Replicas)
	if err != nil {
		return err
	}
	group := scheduler.GroupPolicy{Policy: scheduler.Policy(*policy), Selector: scheduler.Selector(*selector),
		SkipAfter: *skipAfter, PendingTimeout: *pendingTimeout}
	if err := group.Check(); err != nil {
		return err
	}
	log, metrics, stopMetrics, err := common.Setup(stderr, "bai-scheduler")
	if err != nil {
		return err
	}
	defer stopMetrics()
	common.Started(log, func(e *zerolog.Event) {
		e.Str("policy", string(group.Policy)).Str("selector", string(group.Selector)).Dur("lease_ttl", *leaseTTL)
	})
	opts := streams.Options{Replicas: replicas}
	// Its NATS permissions (package perms) let it read only this inbox.
	nc, err := common.Connect(ctx, "bai-scheduler", log, opts, nats.CustomInboxPrefix(events.ServiceInboxPrefix("scheduler")))
	if err != nil {
		return err
	}
	defer nc.Close()
	svc, err := scheduler.New(scheduler.Config{NC: nc, Log: log, LeaseTTL: *leaseTTL, AgentTimeout: *agentTimeout,
		Default: group, Streams: opts, Metrics: metrics})
	if err != nil {
		return err
	}
	if err := svc.Run(ctx); err != nil {
		return err
	}
	svcflags.Stopped(log)
	return nil
}
