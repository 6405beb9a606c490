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
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"
	"github.com/rs/zerolog"

	"github.com/bai-sh/bai/pkg/events"
	"github.com/bai-sh/bai/pkg/events/streams"
	"github.com/bai-sh/bai/pkg/svcflags"
	"github.com/bai-sh/bai/services/gateway"
)

func main() { svcflags.Main("bai-gateway", run) }

func run(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("bai-gateway", flag.ContinueOnError)
	fs.SetOutput(stderr)
	common := svcflags.Register(fs, svcflags.Options{NATS: true, Replicas: true})
	seedFile := fs.String("auth-issuer-seed-file", os.Getenv("BAI_AUTH_ISSUER_SEED_FILE"),
		"file holding the account nkey seed of the NATS auth callout; set: this gateway also answers the callout and the keypair admin API (connect as one of the callout's auth_users)")
	admin := fs.String("admin-access-key", os.Getenv("BAI_ADMIN_ACCESS_KEY"), "the access key with the admin role (env BAI_ADMIN_ACCESS_KEY)")
	idle := fs.Duration("idle-timeout", gateway.DefaultIdleTimeout, "terminate a running session idle this long (reason idle-timeout); negative: never")
	agentMemory := fs.Duration("agent-memory", gateway.DefaultAgentMemory, "refuse a create no agent heartbeating within this long could ever hold; negative: no such check")
	bootstrapFile := fs.String("bootstrap-admin-file", os.Getenv("BAI_BOOTSTRAP_ADMIN_FILE"),
		"with --auth-issuer-seed-file: make the cluster's first admin keypair and write it to this credentials file (0600) when the file is missing; when it is there, make sure its keypair is an admin (env BAI_BOOTSTRAP_ADMIN_FILE)")
	publicURL := fs.String("public-url", os.Getenv("BAI_PUBLIC_NATS_URL"), "the NATS URL(s) bai clients use, written into the --bootstrap-admin-file (env BAI_PUBLIC_NATS_URL)")
	insecure := fs.Bool("insecure-no-auth", false, "serve even when the NATS server requires no authentication (then any access key works with any secret: trials only)")
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
	if *bootstrapFile != "" && *seedFile == "" {
		return errors.New("--bootstrap-admin-file needs --auth-issuer-seed-file: only the gateway running the auth callout stores keypairs")
	}
	log, metrics, stopMetrics, err := common.Setup(stderr, "bai-gateway")
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
	if err := checkAuth(nc, *insecure, log); err != nil {
		return err
	}
	if err := waitKeypairs(ctx, nc, replicas, log); err != nil {
		return err
	}
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
	bootDone := make(chan error, 1)
	go func() {
		if *bootstrapFile == "" {
			bootDone <- nil
			return
		}
		select {
		case <-auth.Ready():
		case <-ctx.Done():
			bootDone <- nil
			return
		}
		ak, created, err := auth.Keys().BootstrapAdmin(ctx, *bootstrapFile, *publicURL)
		if err != nil {
			cancel() // a gateway asked for an admin it cannot make stops
			bootDone <- err
			return
		}
		log.Info().Str("access_key", ak).Bool("created", created).Str("file", *bootstrapFile).Msg("bootstrap_admin")
		bootDone <- nil
	}()
	err = svc.Run(ctx)
	cancel()
	if berr := <-bootDone; berr != nil {
		err = berr
	}
	if aerr := <-authDone; err == nil {
		err = aerr
	}
	if err == nil {
		svcflags.Stopped(log)
	}
	return err
}

// checkAuth refuses a NATS server that authenticates no one: there, any
// client may publish on any key's subjects, so an access key works with
// any secret. --insecure-no-auth serves anyway, with a warning. A server
// with users or an auth callout is accepted even when this gateway runs
// no callout (another gateway may; without one, no client connects).
func checkAuth(nc *nats.Conn, insecure bool, log zerolog.Logger) error {
	if nc.AuthRequired() {
		return nil
	}
	if !insecure {
		return errors.New("the NATS server requires no authentication, so any access key would work with any secret: " +
			"run NATS with the auth callout (deploy/nats, docs/operations.md) or, for a trial, pass --insecure-no-auth")
	}
	log.Warn().Msg("insecure_no_auth: the NATS server authenticates no one; any access key works with any secret")
	return nil
}

// waitKeypairs makes the keypairs bucket, retrying (with a log line)
// while a cluster still elects its leaders: the gateway and its callout
// then find it made, where a single attempt of theirs would fail the start.
func waitKeypairs(ctx context.Context, nc *nats.Conn, replicas int, log zerolog.Logger) error {
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	wait := 250 * time.Millisecond
	for attempt := 1; ; attempt++ {
		actx, cancel := context.WithTimeout(ctx, 10*time.Second)
		_, err := gateway.OpenKeys(actx, js, replicas)
		cancel()
		if err == nil || ctx.Err() != nil {
			return ctx.Err()
		}
		log.Warn().Err(err).Int("attempt", attempt).Dur("retry_in", wait).Msg("keypairs_not_ready_waiting")
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
		wait = min(2*wait, 10*time.Second)
	}
}
