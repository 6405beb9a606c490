// Command bai-agent runs one bai agent: it offers this host's capacity and
// runs the kernels placed on it.
//
// It takes the common flags of every bai binary (package svcflags:
// --nats, --nats-creds, --data-dir, --log-level, --log-format,
// --metrics-addr, --replicas and their BAI_* variables).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/bai-sh/bai/pkg/events"
	"github.com/bai-sh/bai/pkg/events/streams"
	"github.com/bai-sh/bai/pkg/svcflags"
	"github.com/bai-sh/bai/services/agent"
)

func main() { svcflags.Main("bai-agent", run) }

func run(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("bai-agent", flag.ContinueOnError)
	fs.SetOutput(stderr)
	common := svcflags.Register(fs, svcflags.Options{NATS: true, Replicas: true, DataDir: defaultDataDir()})
	dataDir := &common.DataDir
	id := fs.String("id", "", "agent id (default: the stored one, else agent-<hostname>)")
	group := fs.String("scaling-group", "default", "scaling group")
	noSandbox := fs.Bool("no-sandbox", false, "run kernels as plain processes even as root (no namespaces, cgroups or uid change)")
	network := fs.Bool("kernel-network", false, "give kernels the host's network (default: none)")
	pids := fs.Int64("kernel-pids", 0, "most processes of one kernel (default 512)")
	workSize := fs.Int64("kernel-work-size", 0, "size limit of a kernel's work dir in bytes (default 1 GiB)")
	tmpSize := fs.Int64("kernel-tmp-size", 0, "size limit of each of a kernel's private /tmp and /var/tmp in bytes (default 256 MiB)")
	shmSize := fs.Int64("kernel-shm-size", 0, "size limit of a kernel's private /dev/shm in bytes (default 64 MiB)")
	keepCgroupMount := fs.Bool("keep-cgroup-mount", false, "leave the host's cgroup2 mount as it is (default: the agent turns its favordynmods option on, so that an execution into an idle agent does not wait an RCU grace period to join its cgroups)")
	prestart := fs.Int("sandbox-prestart", 0, "with -sandbox-helper: sandbox helpers kept started ahead of executions (default 2; -1: none, each execution starts its own)")
	viaHelper := fs.Bool("sandbox-helper", false, "start every execution through the sandbox helper binary, as the first process of its namespaces (default: where the machine can, amd64 with Linux 5.12, through the agent's spawn server, without a helper process per execution)")
	rtName := fs.String("runtime", "process", "kernel runtime: process, docker (the local Docker Engine, DOCKER_HOST), or sim (kernels that run nothing: benchmarks of the control plane)")
	shares := fs.Float64("cuda-shares-per-device", 1, "cuda.shares one GPU is worth")
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

	log, metrics, stopMetrics, err := common.Setup(stderr, "bai-agent")
	if err != nil {
		return err
	}
	defer stopMetrics()
	common.Started(log, func(e *zerolog.Event) { e.Str("agent_id", *id).Str("runtime", *rtName).Str("scaling_group", *group) })
	var extra []nats.Option
	if *id != "" {
		// An agent's NATS permissions (perms.AgentPermissions) let it
		// read only its own inbox.
		extra = append(extra, nats.CustomInboxPrefix(events.AgentInboxPrefix(*id)))
	}
	opts := streams.Options{Replicas: replicas}
	nc, err := common.Connect(ctx, "bai-agent", log, opts, extra...)
	if err != nil {
		return err
	}
	defer nc.Close()

	var rt agent.Runtime
	var sim *agent.SimConfig
	switch *rtName {
	case "process":
	case "sim":
		sim = &agent.SimConfig{}
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
		return fmt.Errorf("unknown runtime %q (process, docker or sim)", *rtName)
	}

	svc, err := agent.New(agent.Config{
		NC:                  nc,
		Log:                 log,
		DataDir:             *dataDir,
		ID:                  *id,
		ScalingGroup:        *group,
		Runtime:             rt,
		Sim:                 sim,
		CUDASharesPerDevice: *shares,
		Streams:             opts,
		Metrics:             metrics,
		Sandbox: agent.SandboxOptions{
			Disable: *noSandbox, Network: *network, Pids: *pids, WorkDirSize: *workSize,
			TmpSize: *tmpSize, ShmSize: *shmSize, Prestart: *prestart, ViaHelper: *viaHelper, KeepCgroupMount: *keepCgroupMount,
		},
	})
	if err != nil {
		return err
	}
	if err := svc.Run(ctx); err != nil {
		return err
	}
	if err := nc.Drain(); err != nil {
		return err
	}
	svcflags.Stopped(log)
	return nil
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
