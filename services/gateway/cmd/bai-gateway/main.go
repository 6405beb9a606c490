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
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	nc, err := nats.Connect(*url, nats.Name("bai-gateway"), nats.MaxReconnects(-1))
	if err != nil {
		return fmt.Errorf("connect %s: %w", *url, err)
	}
	defer nc.Close()
	log := zerolog.New(os.Stderr).With().Timestamp().Logger()
	svc, err := gateway.New(gateway.Config{NC: nc, Log: log})
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
