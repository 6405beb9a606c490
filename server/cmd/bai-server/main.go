// Command bai-server runs the whole bai mesh in one process: an embedded
// NATS server with JetStream on disk, the gateway, scheduler, registry and
// an agent for this host.
//
// It takes the common flags of every bai binary (package svcflags:
// --data-dir, --log-level, --log-format, --metrics-addr and their BAI_*
// variables); it embeds its NATS server, so it has no --nats.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/rs/zerolog"

	"github.com/bai-sh/bai/pkg/svcflags"
	"github.com/bai-sh/bai/server"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "bai-server:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg := server.Config{}
	fs := flag.NewFlagSet("bai-server", flag.ContinueOnError)
	fs.SetOutput(stderr)
	common := svcflags.Register(fs, svcflags.Options{DataDir: server.DefaultDataDir()})
	fs.StringVar(&cfg.NATSMonitor, "nats-monitor", os.Getenv("BAI_NATS_MONITOR"), "open the embedded NATS server's HTTP monitoring (/varz, /jsz, ...) on `ADDR` (e.g. 127.0.0.1:8222); default: closed (env BAI_NATS_MONITOR)")
	fs.StringVar(&cfg.Listen, "listen", "127.0.0.1:4222", "NATS client address")
	fs.BoolVar(&cfg.SyncAlways, "sync-always", false, "fsync every JetStream write (sync_interval: always)")
	fs.DurationVar(&cfg.IdleTimeout, "idle-timeout", 30*time.Minute, "terminate a running session idle this long (reason idle-timeout); negative: never")
	fs.Var((*byteSize)(&cfg.OutputMaxBytes), "output-max-bytes", "kernel output kept, reserved on the disk by JetStream (e.g. 256m, 2g); default: the output stream's own size, 256m when it is made")
	fs.Var((*byteSize)(&cfg.JetStreamMaxStore), "jetstream-max-store", "what JetStream may store in all (e.g. 20g); default: 3/4 of the disk's free space at start")
	fs.Var((*byteSize)(&cfg.MinFreeDisk), "min-free-disk", "free space under which the server refuses new sessions, executions and uploads as out of disk space (running sessions go on); default 64m")
	fs.StringVar(&cfg.Runtime, "runtime", envOr("BAI_RUNTIME", server.RuntimeProcess), "kernel runtime of the agent: process, docker (the local Docker Engine, DOCKER_HOST), or sim (kernels that run nothing: benchmarks of the control plane) (env BAI_RUNTIME)")
	fs.BoolVar(&cfg.KeepCgroupMount, "keep-cgroup-mount", false, "leave the host's cgroup2 mount as it is (default: as root, the agent turns its favordynmods option on, so that an execution into an idle agent does not wait an RCU grace period to join its cgroups)")
	fs.StringVar(&cfg.DockerInterpreter, "docker-interpreter", "", "docker runtime: the program that runs a run's code in the container, as PROGRAM -c CODE (default python3)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	cfg.DataDir = common.DataDir
	log, metrics, stopMetrics, err := common.Setup(stderr, "bai-server")
	if err != nil {
		return err
	}
	defer stopMetrics()
	cfg.Log, cfg.Metrics = log, metrics
	srv, err := server.New(cfg)
	if err != nil {
		return err
	}
	common.Started(log, func(e *zerolog.Event) {
		e.Str("listen", cfg.Listen).Str("runtime", cfg.Runtime).Str("nats_monitor", cfg.NATSMonitor)
	})
	go func() {
		select {
		case <-srv.Ready():
			fmt.Fprintf(stdout, "bai server ready on %s\ncredentials: %s (bai reads it; or: source %s)\ntry: bin/bai run --rm -c 'print(\"hello world\")' python\n",
				srv.ClientURL(), srv.CredentialsPath(), srv.CredentialsPath())
		case <-ctx.Done():
		}
	}()
	if err := srv.Run(ctx); err != nil {
		return err
	}
	svcflags.Stopped(log)
	return nil
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
