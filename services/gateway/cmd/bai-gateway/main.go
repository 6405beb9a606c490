// Command bai-gateway admits session requests into the session log.
//
// It waits for NATS: started before the server is up, or beside a cluster
// still electing its leaders, it retries (with a log line per attempt,
// backing off up to 10 s) until the streams are provisioned; after a
// disconnect it reconnects for ever.
//
// It takes the common flags of every bai binary (package svcflags:
// --nats, --nats-creds, --log-level, --log-format, --metrics-addr,
// --replicas and their BAI_* variables).
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
	"github.com/rs/zerolog"

	"github.com/bai-sh/bai/pkg/events"
	"github.com/bai-sh/bai/pkg/events/streams"
	"github.com/bai-sh/bai/pkg/svcflags"
	"github.com/bai-sh/bai/services/gateway"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "bai-gateway:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("bai-gateway", flag.ContinueOnError)
	fs.SetOutput(stderr)
	common := svcflags.Register(fs, svcflags.Options{NATS: true, Replicas: true})
	seedFile := fs.String("auth-issuer-seed-file", os.Getenv("BAI_AUTH_ISSUER_SEED_FILE"),
		"file holding the account nkey seed of the NATS auth callout; set: this gateway also answers the callout and the keypair admin API (connect as one of the callout's auth_users)")
	admin := fs.String("admin-access-key", os.Getenv("BAI_ADMIN_ACCESS_KEY"), "the access key with the admin role (env BAI_ADMIN_ACCESS_KEY)")
	idle := fs.Duration("idle-timeout", gateway.DefaultIdleTimeout, "terminate a running session idle this long (reason idle-timeout); negative: never")
	agentMemory := fs.Duration("agent-memory", gateway.DefaultAgentMemory, "refuse a create no agent heartbeating within this long could ever hold; negative: no such check")
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
	log, err := common.Logger(stderr, "bai-gateway")
	if err != nil {
		return err
	}
	metrics, stopMetrics, err := common.StartMetrics(log)
	if err != nil {
		return err
	}
	defer stopMetrics()
	common.Started(log, func(e *zerolog.Event) { e.Bool("auth_callout", *seedFile != "") })
	opts := streams.Options{Replicas: replicas}
	// Its NATS permissions (package perms) let it read only this inbox.
	nc, err := common.Connect(ctx, "bai-gateway", log, opts, nats.CustomInboxPrefix(events.ServiceInboxPrefix("gateway")))
	if err != nil {
		return err
	}
	defer nc.Close()
	svc, err := gateway.New(gateway.Config{NC: nc, Log: log, AdminAccessKey: *admin, IdleTimeout: *idle, AgentMemory: *agentMemory, Streams: opts,
		Metrics: metrics})
	if err != nil {
		return err
	}
	if *seedFile == "" {
		if err := svc.Run(ctx); err != nil {
			return err
		}
		svcflags.Stopped(log)
		return nil
	}
	seed, err := os.ReadFile(*seedFile)
	if err != nil {
		return fmt.Errorf("auth issuer seed: %w", err)
	}
	issuer, err := nkeys.FromSeed(bytes.TrimSpace(seed))
	if err != nil {
		return fmt.Errorf("auth issuer seed %s: %w", *seedFile, err)
	}
	auth, err := gateway.NewAuth(gateway.AuthConfig{NC: nc, Issuer: issuer, Log: log, Replicas: replicas})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	authDone := make(chan error, 1)
	go func() {
		err := auth.Run(ctx)
		cancel() // the gateway stops with its callout
		authDone <- err
	}()
	err = svc.Run(ctx)
	cancel()
	if aerr := <-authDone; err == nil {
		err = aerr
	}
	if err == nil {
		svcflags.Stopped(log)
	}
	return err
}
