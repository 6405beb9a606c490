// Command bai-agent runs one bai agent: it offers this host's capacity and
// runs the kernels placed on it.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/bai-sh/bai/pkg/events"
	"github.com/bai-sh/bai/pkg/events/streams"
	"github.com/bai-sh/bai/services/agent"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "bai-agent:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("bai-agent", flag.ContinueOnError)
	fs.SetOutput(stderr)
	natsURL := fs.String("nats", envOr("BAI_NATS_URL", nats.DefaultURL), "NATS server URL (env BAI_NATS_URL); user:password may be in it")
	dataDir := fs.String("data-dir", defaultDataDir(), "state db and kernel work directories")
	id := fs.String("id", "", "agent id (default: the stored one, else agent-<hostname>)")
	group := fs.String("scaling-group", "default", "scaling group")
	noSandbox := fs.Bool("no-sandbox", false, "run kernels as plain processes even as root (no namespaces, cgroups or uid change)")
	network := fs.Bool("kernel-network", false, "give kernels the host's network (default: none)")
	pids := fs.Int64("kernel-pids", 0, "most processes of one kernel (default 512)")
	workSize := fs.Int64("kernel-work-size", 0, "size limit of a kernel's work dir in bytes (default 1 GiB)")
	tmpSize := fs.Int64("kernel-tmp-size", 0, "size limit of each of a kernel's private /tmp and /var/tmp in bytes (default 256 MiB)")
	shmSize := fs.Int64("kernel-shm-size", 0, "size limit of a kernel's private /dev/shm in bytes (default 64 MiB)")
	rtName := fs.String("runtime", "process", "kernel runtime: process, or docker (the local Docker Engine, DOCKER_HOST)")
	shares := fs.Float64("cuda-shares-per-device", 1, "cuda.shares one GPU is worth")
	replicasFlag := fs.String("replicas", os.Getenv("BAI_REPLICAS"), "replicas of the streams and buckets it makes or raises (never lowers); 0: 3 on a cluster of 3 or more nodes, else 1 (env BAI_REPLICAS)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	replicas, err := parseReplicas(*replicasFlag)
	if err != nil {
		return err
	}

	log := zerolog.New(zerolog.ConsoleWriter{Out: stderr}).With().Timestamp().Logger()
	natsOpts := natsOptions("bai-agent", log)
	if *id != "" {
		// An agent's NATS permissions (perms.AgentPermissions) let it
		// read only its own inbox.
		natsOpts = append(natsOpts, nats.CustomInboxPrefix(events.AgentInboxPrefix(*id)))
	}
	nc, err := nats.Connect(*natsURL, natsOpts...)
	if err != nil {
		return fmt.Errorf("connect to NATS: %w", err)
	}
	defer nc.Close()
	opts := streams.Options{Replicas: replicas}
	if err := waitNATS(ctx, nc, opts, log); err != nil {
		return err
	}

	var rt agent.Runtime
	switch *rtName {
	case "process":
	case "docker":
		gpus, err := agent.DetectGPUs(ctx)
		if err != nil {
			return err
		}
		owner := *id
		if owner == "" {
			owner = "default"
		}
		opts := agent.DockerOptions{Owner: owner, Network: *network, Pids: *pids, TmpSize: *tmpSize, ShmSize: *shmSize}
		if len(gpus) > 0 {
			opts.GPUs = agent.NewGPUAllocator(gpus, *shares)
		}
		d, err := agent.NewDockerRuntime(ctx, opts)
		if err != nil {
			return err
		}
		defer d.Close()
		rt = d
	default:
		return fmt.Errorf("unknown runtime %q (process or docker)", *rtName)
	}

	svc, err := agent.New(agent.Config{
		NC:                  nc,
		Log:                 log,
		DataDir:             *dataDir,
		ID:                  *id,
		ScalingGroup:        *group,
		Runtime:             rt,
		CUDASharesPerDevice: *shares,
		Streams:             opts,
		Sandbox: agent.SandboxOptions{
			Disable: *noSandbox, Network: *network, Pids: *pids, WorkDirSize: *workSize,
			TmpSize: *tmpSize, ShmSize: *shmSize,
		},
	})
	if err != nil {
		return err
	}
	if err := svc.Run(ctx); err != nil {
		return err
	}
	return nc.Drain()
}

// natsOptions connect for good: the first connection is retried while
// the server is unreachable, and a lost one reconnects without end, each
// with a log line.
func natsOptions(name string, log zerolog.Logger) []nats.Option {
	return []nats.Option{
		nats.Name(name), nats.MaxReconnects(-1), nats.RetryOnFailedConnect(true), nats.ReconnectWait(time.Second),
		nats.ConnectHandler(func(nc *nats.Conn) { log.Info().Str("server", nc.ConnectedUrlRedacted()).Msg("nats_connected") }),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) { log.Warn().Err(err).Msg("nats_disconnected") }),
		nats.ReconnectHandler(func(nc *nats.Conn) { log.Info().Str("server", nc.ConnectedUrlRedacted()).Msg("nats_reconnected") }),
		nats.ReconnectErrHandler(func(_ *nats.Conn, err error) { log.Warn().Err(err).Msg("nats_unreachable_retrying") }),
	}
}

// waitNATS returns once the streams are provisioned, retrying while NATS
// is unreachable or electing.
func waitNATS(ctx context.Context, nc *nats.Conn, opts streams.Options, log zerolog.Logger) error {
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	return streams.WaitProvision(ctx, js, opts, func(attempt int, wait time.Duration, err error) {
		log.Warn().Err(err).Int("attempt", attempt).Dur("retry_in", wait).Msg("nats_not_ready_waiting")
	})
}

// parseReplicas reads --replicas (or BAI_REPLICAS): empty is 0.
func parseReplicas(v string) (int, error) {
	if v == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 || n > 5 {
		return 0, fmt.Errorf("--replicas (BAI_REPLICAS) %q: want 0 (from the cluster size) or a count from 1 to 5", v)
	}
	return n, nil
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

// defaultDataDir is $XDG_DATA_HOME/bai/agent, else ~/.local/share/bai/agent.
func defaultDataDir() string {
	if d := os.Getenv("XDG_DATA_HOME"); d != "" {
		return filepath.Join(d, "bai", "agent")
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return filepath.Join(".", "bai-agent")
	}
	return filepath.Join(home, ".local", "share", "bai", "agent")
}
