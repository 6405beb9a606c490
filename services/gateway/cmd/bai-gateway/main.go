// Command bai-gateway admits session requests into the session log.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

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
	admin := flag.String("admin-access-key", os.Getenv("BAI_ADMIN_ACCESS_KEY"), "the access key with the admin role (env BAI_ADMIN_ACCESS_KEY)")
	idle := flag.Duration("idle-timeout", gateway.DefaultIdleTimeout, "terminate a running session idle this long (reason idle-timeout); negative: never")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	nc, err := nats.Connect(*url, nats.Name("bai-gateway"), nats.MaxReconnects(-1))
	if err != nil {
		return fmt.Errorf("connect %s: %w", *url, err)
	}
	defer nc.Close()
	log := zerolog.New(os.Stderr).With().Timestamp().Logger()
	svc, err := gateway.New(gateway.Config{NC: nc, Log: log, AdminAccessKey: *admin, IdleTimeout: *idle})
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
