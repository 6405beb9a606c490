// Command bai-server runs the whole bai mesh in one process: an embedded
// NATS server with JetStream on disk, the gateway, scheduler, registry and
// an agent for this host.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/rs/zerolog"

	"github.com/bai-sh/bai/server"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "bai-server:", err)
		os.Exit(1)
	}
}

func run() error {
	cfg := server.Config{}
	flag.StringVar(&cfg.DataDir, "data-dir", server.DefaultDataDir(), "directory for JetStream, the registry, agent state and credentials")
	flag.StringVar(&cfg.Listen, "listen", "127.0.0.1:4222", "NATS client address")
	flag.BoolVar(&cfg.SyncAlways, "sync-always", false, "fsync every JetStream write (sync_interval: always)")
	flag.DurationVar(&cfg.IdleTimeout, "idle-timeout", 30*time.Minute, "terminate a running session idle this long (reason idle-timeout); negative: never")
	flag.StringVar(&cfg.Runtime, "runtime", envOr("BAI_RUNTIME", server.RuntimeProcess), "kernel runtime of the agent: process, or docker (the local Docker Engine, DOCKER_HOST) (env BAI_RUNTIME)")
	flag.StringVar(&cfg.DockerInterpreter, "docker-interpreter", "", "docker runtime: the program that runs a run's code in the container, as PROGRAM -c CODE (default python3)")
	level := flag.String("log-level", "info", "log level: debug, info, warn, error")
	flag.Parse()
	lvl, err := zerolog.ParseLevel(*level)
	if err != nil {
		return fmt.Errorf("--log-level: %w", err)
	}
	cfg.Log = zerolog.New(zerolog.ConsoleWriter{Out: os.Stderr}).Level(lvl).With().Timestamp().Logger()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	srv, err := server.New(cfg)
	if err != nil {
		return err
	}
	go func() {
		select {
		case <-srv.Ready():
			fmt.Printf("bai server ready on %s\ncredentials: %s (bai reads it; or: source %s)\ntry: bin/bai run --rm -c 'print(\"hello world\")' python\n",
				srv.ClientURL(), srv.CredentialsPath(), srv.CredentialsPath())
		case <-ctx.Done():
		}
	}()
	return srv.Run(ctx)
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}
