// Command bai-server runs the whole bai mesh in one process: an embedded
// NATS server with JetStream on disk, the gateway, scheduler, registry and
// an agent for this host.
package main

import (
	"context"
	"flag"
	"fmt"
	"math"
	"os"
	"os/signal"
	"strconv"
	"strings"
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
	flag.Var((*byteSize)(&cfg.OutputMaxBytes), "output-max-bytes", "kernel output kept, reserved on the disk by JetStream (e.g. 256m, 2g); default: the output stream's own size, 256m when it is made")
	flag.Var((*byteSize)(&cfg.JetStreamMaxStore), "jetstream-max-store", "what JetStream may store in all (e.g. 20g); default: 3/4 of the disk's free space at start")
	flag.Var((*byteSize)(&cfg.MinFreeDisk), "min-free-disk", "free space under which the server refuses new sessions, executions and uploads as out of disk space (running sessions go on); default 64m")
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

// byteSize is a flag of bytes: a number with an optional k, m, g or t
// (1024-based).
type byteSize int64

func (b *byteSize) String() string { return strconv.FormatInt(int64(*b), 10) }

func (b *byteSize) Set(v string) error {
	s := strings.ToLower(strings.TrimSpace(v))
	mult := int64(1)
	if n := len(s); n > 0 {
		if i := strings.IndexByte("kmgt", s[n-1]); i >= 0 {
			mult = int64(1) << (10 * (i + 1))
			s = strings.TrimSuffix(s[:n-1], "i")
		} else if strings.HasSuffix(s, "b") {
			s = s[:n-1]
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 || n > math.MaxInt64/mult {
		return fmt.Errorf("%q is not a size in bytes (e.g. 512m, 2g)", v)
	}
	*b = byteSize(n * mult)
	return nil
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}
