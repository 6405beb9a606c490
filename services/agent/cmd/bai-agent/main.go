// Command bai-agent runs one bai agent: it offers this host's capacity and
// runs the kernels placed on it.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/bai-sh/bai/pkg/events"
	"github.com/bai-sh/bai/services/agent"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "bai-agent:", err)
		os.Exit(1)
	}
}

func run() error {
	natsURL := flag.String("nats", envOr("BAI_NATS_URL", nats.DefaultURL), "NATS server URL (env BAI_NATS_URL); user:password may be in it")
	dataDir := flag.String("data-dir", defaultDataDir(), "state db and kernel work directories")
	id := flag.String("id", "", "agent id (default: the stored one, else agent-<hostname>)")
	group := flag.String("scaling-group", "default", "scaling group")
	noSandbox := flag.Bool("no-sandbox", false, "run kernels as plain processes even as root (no namespaces, cgroups or uid change)")
	network := flag.Bool("kernel-network", false, "give kernels the host's network (default: none)")
	pids := flag.Int64("kernel-pids", 0, "most processes of one kernel (default 512)")
	workSize := flag.Int64("kernel-work-size", 0, "size limit of a kernel's work dir in bytes (default 1 GiB)")
	tmpSize := flag.Int64("kernel-tmp-size", 0, "size limit of each of a kernel's private /tmp and /var/tmp in bytes (default 256 MiB)")
	shmSize := flag.Int64("kernel-shm-size", 0, "size limit of a kernel's private /dev/shm in bytes (default 64 MiB)")
	rtName := flag.String("runtime", "process", "kernel runtime: process, or docker (the local Docker Engine, DOCKER_HOST)")
	shares := flag.Float64("cuda-shares-per-device", 1, "cuda.shares one GPU is worth")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	log := zerolog.New(zerolog.ConsoleWriter{Out: os.Stderr}).With().Timestamp().Logger()
	opts := []nats.Option{nats.Name("bai-agent"), nats.MaxReconnects(-1)}
	if *id != "" {
		// An agent's NATS permissions (perms.AgentPermissions) let it
		// read only its own inbox.
		opts = append(opts, nats.CustomInboxPrefix(events.AgentInboxPrefix(*id)))
	}
	nc, err := nats.Connect(*natsURL, opts...)
	if err != nil {
		return fmt.Errorf("connect to NATS: %w", err)
	}
	defer nc.Close()

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
