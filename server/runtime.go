package server

import (
	"context"
	"fmt"

	"github.com/bai-sh/bai/services/agent"
)

// Kernel runtimes of the embedded agent (Config.Runtime).
const (
	RuntimeProcess = "process"
	RuntimeDocker  = "docker"
	// RuntimeSim runs kernels that pass through the whole lifecycle and
	// run nothing (an execution exits 0 at once): for measuring the
	// control plane alone (bai-bench -nats-url, make bench-cluster).
	RuntimeSim = "sim"
)

func checkRuntime(name string) error {
	switch name {
	case "", RuntimeProcess, RuntimeDocker, RuntimeSim:
		return nil
	}
	return fmt.Errorf("%w: runtime %q: process, docker or sim", ErrConfig, name)
}

// agentRuntime makes the embedded agent's runtime: nil for the process
// runtime (the agent's default), else a Docker runtime on the local
// engine (DOCKER_HOST), its containers labelled with the agent's id, GPUs
// offered when there are. The returned func closes it.
func (s *Server) agentRuntime(ctx context.Context, agentID string) (agent.Runtime, func(), error) {
	if s.cfg.Runtime != RuntimeDocker {
		return nil, func() {}, nil
	}
	opts := agent.DockerOptions{Owner: agentID, Interpreter: s.cfg.DockerInterpreter}
	gpus, err := agent.DetectGPUs(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("server: docker runtime: %w", err)
	}
	if len(gpus) > 0 {
		opts.GPUs = agent.NewGPUAllocator(gpus, 1)
	}
	d, err := agent.NewDockerRuntime(ctx, opts)
	if err != nil {
		return nil, nil, fmt.Errorf("server: docker runtime: %w", err)
	}
	return d, func() { _ = d.Close() }, nil
}
