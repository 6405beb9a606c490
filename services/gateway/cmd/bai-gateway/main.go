// Command bai-gateway admits session requests into the session log.
package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
	"github.com/rs/zerolog"

	"github.com/bai-sh/bai/pkg/events"
	"github.com/bai-sh/bai/services/gateway"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "bai-gateway:", err)
		os.Exit(1)
	}
}

func run() error {
	url := flag.String("nats", envOr("BAI_NATS_URL", nats.DefaultURL), "NATS URL (user:password may be in it)")
	seedFile := flag.String("auth-issuer-seed-file", os.Getenv("BAI_AUTH_ISSUER_SEED_FILE"),
		"file holding the account nkey seed of the NATS auth callout; set: this gateway also answers the callout and the keypair admin API (connect as one of the callout's auth_users)")
	admin := flag.String("admin-access-key", os.Getenv("BAI_ADMIN_ACCESS_KEY"), "the access key with the admin role (env BAI_ADMIN_ACCESS_KEY)")
	idle := flag.Duration("idle-timeout", gateway.DefaultIdleTimeout, "terminate a running session idle this long (reason idle-timeout); negative: never")
	agentMemory := flag.Duration("agent-memory", gateway.DefaultAgentMemory, "refuse a create no agent heartbeating within this long could ever hold; negative: no such check")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	nc, err := nats.Connect(*url, nats.Name("bai-gateway"), nats.MaxReconnects(-1),
		// Its NATS permissions (package perms) let it read only this inbox.
		nats.CustomInboxPrefix(events.ServiceInboxPrefix("gateway")))
	if err != nil {
		return fmt.Errorf("connect %s: %w", *url, err)
	}
	defer nc.Close()
	log := zerolog.New(os.Stderr).With().Timestamp().Logger()
	svc, err := gateway.New(gateway.Config{NC: nc, Log: log, AdminAccessKey: *admin, IdleTimeout: *idle, AgentMemory: *agentMemory})
	if err != nil {
		return err
	}
	if *seedFile == "" {
		return svc.Run(ctx)
	}
	seed, err := os.ReadFile(*seedFile)
	if err != nil {
		return fmt.Errorf("auth issuer seed: %w", err)
	}
	issuer, err := nkeys.FromSeed(bytes.TrimSpace(seed))
	if err != nil {
		return fmt.Errorf("auth issuer seed %s: %w", *seedFile, err)
	}
	auth, err := gateway.NewAuth(gateway.AuthConfig{NC: nc, Issuer: issuer, Log: log})
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
	return err
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}
