package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/moby/moby/api/pkg/stdcopy"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"

	"github.com/bai-sh/bai/pkg/events"
	"github.com/bai-sh/bai/pkg/slots"
)

// Container labels of the docker runtime.
const (
	labelAgent     = "ai.bai.agent" // the runtime's Name option: whose container
	labelSession   = "ai.bai.session-id"
	labelKernel    = "ai.bai.kernel-id"
	labelAccessKey = "ai.bai.access-key"
)

// DockerOptions configures the docker runtime.
type DockerOptions struct {
	// Owner marks the containers of this agent (label ai.bai.agent), so that
	// two agents on one engine never touch each other's. Required.
	Owner string
	// Network gives every container the default bridge network; default:
	// only those whose session asks for one (SessionSpec.Network).
	Network bool
	// Interpreter runs a run's code: Interpreter -c code. Default "python3".
	Interpreter string
	// Pids is the most processes of one container. Default 512.
	Pids int64
	// GPUs are the NVIDIA devices the agent offers (see DetectGPUs); a
	// kernel with cuda slots gets device requests for its share of them.
	GPUs *GPUAllocator
	// TmpSize is the size of each of a container's /tmp and /var/tmp, a
	// tmpfs of its own (charged to its memory limit). Default 256 MiB.
	TmpSize int64
	// ShmSize is the size of a container's /dev/shm. Default 64 MiB.
	ShmSize int64
}

// DockerRuntime runs each kernel as a Docker container (through the Docker
// Engine API) and each execution as an exec in it.
type DockerRuntime struct {
	c      *client.Client
	opts   DockerOptions
	report func(k *events.SessionSpec, progress int)
}

// NewDockerRuntime connects to the engine of the environment (DOCKER_HOST,
// else the local socket) and checks that it answers.
func NewDockerRuntime(ctx context.Context, opts DockerOptions) (*DockerRuntime, error) {
	if !events.ValidToken(opts.Owner) {
		return nil, fmt.Errorf("%w: docker runtime owner %q is not a token", ErrConfig, opts.Owner)
	}
	if opts.Interpreter == "" {
		opts.Interpreter = "python3"
	}
	if opts.Pids == 0 {
		opts.Pids = 512
	}
	if opts.TmpSize == 0 {
		opts.TmpSize = 256 << 20
	}
	if opts.ShmSize == 0 {
		opts.ShmSize = 64 << 20
	}
	c, err := client.New(client.FromEnv)
	if err != nil {
		return nil, fmt.Errorf("docker client: %w", err)
	}
	if _, err := c.Ping(ctx, client.PingOptions{}); err != nil {
		c.Close()
		return nil, fmt.Errorf("docker engine: %w", err)
	}
	return &DockerRuntime{c: c, opts: opts}, nil
}

// Name is "docker".
func (r *DockerRuntime) Name() string { return "docker" }

// Close closes the engine connection.
func (r *DockerRuntime) Close() error { return r.c.Close() }

// ReportPulls sets what Prepare calls while it pulls: once with -1 when
// the pull starts, then with the percent done.
func (r *DockerRuntime) ReportPulls(f func(k *events.SessionSpec, progress int)) { r.report = f }

// Prepare pulls the image when the engine lacks it.
func (r *DockerRuntime) Prepare(ctx context.Context, k *events.SessionSpec) error {
	if _, err := r.c.ImageInspect(ctx, k.Image); err == nil {
		return nil
	}
	if r.report != nil {
		r.report(k, -1)
	}
	resp, err := r.c.ImagePull(ctx, k.Image, client.ImagePullOptions{})
	if err != nil {
		return fmt.Errorf("%w: pull %s: %v", ErrImage, k.Image, err)
	}
	defer resp.Close()
	type layer struct{ cur, total int64 }
	layers := map[string]*layer{}
	last := -1
	for m, err := range resp.JSONMessages(ctx) {
		if err != nil {
			return fmt.Errorf("%w: pull %s: %v", ErrImage, k.Image, err)
		}
		if m.Error != nil {
			return fmt.Errorf("%w: pull %s: %s", ErrImage, k.Image, m.Error.Message)
		}
		if m.ID == "" || m.Progress == nil {
			continue
		}
		if m.Status == "Downloading" && m.Progress.Total > 0 {
			layers[m.ID] = &layer{m.Progress.Current, m.Progress.Total}
		} else if m.Status == "Download complete" || m.Status == "Pull complete" {
			if l := layers[m.ID]; l != nil {
				l.cur = l.total
			}
		}
		var cur, total int64
		for _, l := range layers {
			cur, total = cur+l.cur, total+l.total
		}
		if total == 0 {
			continue
		}
		if pct := int(cur * 100 / total); pct != last && r.report != nil {
			last = pct
			r.report(k, pct)
		}
	}
	if last != 100 && r.report != nil {
		r.report(k, 100)
	}
	return nil
}

func containerName(kernelID string) string { return "bai-" + kernelID }

// Create creates and starts the kernel's container with its slot limits.
func (r *DockerRuntime) Create(ctx context.Context, k *events.SessionSpec) error {
	name := containerName(k.MainKernelID)
	if ok, err := r.Exists(ctx, k); err != nil || ok {
		return err
	}
	set, err := slots.ParseMap(k.Slots)
	if err != nil {
		return fmt.Errorf("slots of kernel %s: %w", k.MainKernelID, err)
	}
	pids := r.opts.Pids
	// Temporary directories of the container's own, in memory, gone with
	// it; nothing of the host is mounted in. The agent copies nothing
	// into or out of a container (code travels as an argument; uploads
	// need the process runtime), so no host path ever resolves a name the
	// container made.
	tmp := fmt.Sprintf("rw,nosuid,nodev,size=%d,mode=1777", r.opts.TmpSize)
	hc := &container.HostConfig{
		NetworkMode: "none",
		Init:        boolPtr(true),
		Tmpfs:       map[string]string{"/tmp": tmp, "/var/tmp": tmp},
		ShmSize:     r.opts.ShmSize,
		Resources: container.Resources{
			NanoCPUs:  int64(set["cpu"]) * 1000, // micro-CPUs → nano-CPUs
			Memory:    int64(set["mem"]),
			PidsLimit: &pids,
		},
	}
	if set["mem"] > 0 {
		hc.MemorySwap = int64(set["mem"])
	}
	if r.opts.Network || k.Network {
		hc.NetworkMode = "bridge"
	}
	env := []string{"LANG=C.UTF-8", "PYTHONUNBUFFERED=1", "HOME=" + KernelWorkDir}
	if r.opts.GPUs != nil {
		devs, err := r.opts.GPUs.Allocate(k.MainKernelID, set)
		if err != nil {
			return err
		}
		if len(devs) > 0 {
			hc.DeviceRequests = []container.DeviceRequest{{Driver: "nvidia", DeviceIDs: devs, Capabilities: [][]string{{"gpu"}}}}
		}
	}
	// The existing one (an earlier try) may be created but not started.
	_, err = r.c.ContainerCreate(ctx, client.ContainerCreateOptions{
		Name: name,
		Config: &container.Config{
			Image:      k.Image,
			Cmd:        []string{"/bin/sh", "-c", "trap 'exit 0' TERM; while :; do sleep 3600; done"},
			Env:        env,
			WorkingDir: KernelWorkDir,
			Hostname:   hostname(k.MainKernelID),
			Labels: map[string]string{
				labelAgent: r.opts.Owner, labelSession: k.ID, labelKernel: k.MainKernelID, labelAccessKey: k.AccessKey,
			},
		},
		HostConfig: hc,
	})
	if err != nil && !strings.Contains(err.Error(), "Conflict") {
		return fmt.Errorf("create container of kernel %s: %w", k.MainKernelID, err)
	}
	if _, err := r.c.ContainerStart(ctx, name, client.ContainerStartOptions{}); err != nil {
		return fmt.Errorf("start container of kernel %s: %w", k.MainKernelID, err)
	}
	return nil
}

func boolPtr(b bool) *bool { return &b }

// Exists reports whether the kernel's container runs.
func (r *DockerRuntime) Exists(ctx context.Context, k *events.SessionSpec) (bool, error) {
	res, err := r.c.ContainerInspect(ctx, containerName(k.MainKernelID), client.ContainerInspectOptions{})
	if err != nil {
		if isNotFound(err) {
			return false, nil
		}
		return false, fmt.Errorf("inspect container of kernel %s: %w", k.MainKernelID, err)
	}
	st := res.Container.State
	return st != nil && st.Running, nil
}

func isNotFound(err error) bool {
	return err != nil && (strings.Contains(err.Error(), "No such") || strings.Contains(err.Error(), "not found"))
}

// Destroy removes the kernel's container and what it runs.
func (r *DockerRuntime) Destroy(ctx context.Context, k *events.SessionSpec) error {
	return r.remove(ctx, k.MainKernelID)
}

func (r *DockerRuntime) remove(ctx context.Context, id string) error {
	if r.opts.GPUs != nil {
		r.opts.GPUs.Release(id)
	}
	_, err := r.c.ContainerRemove(ctx, containerName(id), client.ContainerRemoveOptions{Force: true, RemoveVolumes: true})
	if err != nil && !isNotFound(err) {
		return fmt.Errorf("remove container of kernel %s: %w", id, err)
	}
	return nil
}

// Adopt takes back, after a restart, the devices of a kernel whose
// container still runs.
func (r *DockerRuntime) Adopt(_ context.Context, k *events.SessionSpec) error {
	if r.opts.GPUs == nil {
		return nil
	}
	set, err := slots.ParseMap(k.Slots)
	if err == nil {
		_, err = r.opts.GPUs.Allocate(k.MainKernelID, set)
	}
	return err
}

// Kernels lists the kernel ids of this owner's containers, sorted.
func (r *DockerRuntime) Kernels(ctx context.Context) ([]string, error) {
	res, err := r.c.ContainerList(ctx, client.ContainerListOptions{
		All: true, Filters: client.Filters{}.Add("label", labelAgent+"="+r.opts.Owner),
	})
	if err != nil {
		return nil, fmt.Errorf("list containers: %w", err)
	}
	var ids []string
	for _, c := range res.Items {
		if id := c.Labels[labelKernel]; id != "" {
			ids = append(ids, id)
		}
	}
	sort.Strings(ids)
	return ids, nil
}

// Reap removes this owner's containers that keep does not have.
func (r *DockerRuntime) Reap(ctx context.Context, keep map[string]bool) ([]string, error) {
	ids, err := r.Kernels(ctx)
	if err != nil {
		return nil, err
	}
	var reaped []string
	var errs []error
	for _, id := range ids {
		if keep[id] {
			continue
		}
		if err := r.remove(ctx, id); err != nil {
			errs = append(errs, err)
			continue
		}
		reaped = append(reaped, id)
	}
	return reaped, errors.Join(errs...)
}

// Exec runs code through the interpreter, or a command line through
// /bin/sh -c, as an exec in the container, streaming its output.
func (r *DockerRuntime) Exec(ctx context.Context, k *events.SessionSpec, run events.RunSpec) (Process, error) {
	argv := []string{"/bin/sh", "-c", run.Exec}
	if run.Exec == "" {
		argv = []string{r.opts.Interpreter, "-c", run.Code}
	}
	var gpus string
	var hasGPUs bool
	if r.opts.GPUs != nil {
		gpus, hasGPUs = r.opts.GPUs.Visible(k.MainKernelID)
	}
	env := execEnv([]string{"PATH=" + execEnvPath, "HOME=" + KernelWorkDir, "LANG=C.UTF-8", "PYTHONUNBUFFERED=1"}, k.Env, gpus, hasGPUs)
	cr, err := r.c.ExecCreate(ctx, containerName(k.MainKernelID), client.ExecCreateOptions{
		AttachStdout: true, AttachStderr: true, Env: env, WorkingDir: KernelWorkDir, Cmd: argv,
	})
	if err != nil {
		return nil, fmt.Errorf("create exec of run %s: %w", run.ID, err)
	}
	att, err := r.c.ExecAttach(ctx, cr.ID, client.ExecAttachOptions{})
	if err != nil {
		return nil, fmt.Errorf("attach exec of run %s: %w", run.ID, err)
	}
	outR, outW := io.Pipe()
	errR, errW := io.Pipe()
	p := &dockerProcess{r: r, id: cr.ID, att: att, stdout: outR, stderr: errR, copied: make(chan struct{})}
	go func() {
		defer close(p.copied)
		_, err := stdcopy.StdCopy(outW, errW, att.Reader)
		outW.CloseWithError(err)
		errW.CloseWithError(err)
	}()
	return p, nil
}

// dockerProcess is one exec.
type dockerProcess struct {
	r              *DockerRuntime
	id             string
	att            client.ExecAttachResult
	stdout, stderr *io.PipeReader
	copied         chan struct{}
}

func (p *dockerProcess) Stdout() io.Reader { return p.stdout }
func (p *dockerProcess) Stderr() io.Reader { return p.stderr }

func (p *dockerProcess) Wait() (int, error) {
	<-p.copied
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		res, err := p.r.c.ExecInspect(ctx, p.id, client.ExecInspectOptions{})
		if err != nil {
			return -1, fmt.Errorf("inspect exec: %w", err)
		}
		if !res.Running {
			return res.ExitCode, nil
		}
		if err := pause(ctx, 10*time.Millisecond); err != nil {
			return -1, err
		}
	}
}

// Kill kills the exec's process by its host pid (the agent runs on the
// engine's host, as root).
func (p *dockerProcess) Kill() error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := p.r.c.ExecInspect(ctx, p.id, client.ExecInspectOptions{})
	if err != nil {
		return fmt.Errorf("inspect exec: %w", err)
	}
	if !res.Running || res.PID == 0 {
		return nil
	}
	// The exec's process and what it started: stopped first, scan after
	// scan until no new process shows up (a stopped process forks no
	// more; one forked after a scan would escape it, be re-parented and
	// hold the exec's output open), then killed together.
	stopped := map[int]bool{}
	for fresh := true; fresh; {
		fresh = false
		for _, pid := range append(descendants(res.PID), res.PID) {
			if !stopped[pid] {
				stopped[pid], fresh = true, true
				_ = syscall.Kill(pid, syscall.SIGSTOP)
			}
		}
	}
	for pid := range stopped {
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
			return fmt.Errorf("kill exec pid %d: %w", pid, err)
		}
	}
	return nil
}

// descendants lists the processes under pid, from /proc.
func descendants(pid int) []int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	children := map[int][]int{}
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		data, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...: comm may hold spaces.
		s := string(data)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(s[i+1:])
		if len(f) < 2 {
			continue
		}
		if pp, err := strconv.Atoi(f[1]); err == nil {
			children[pp] = append(children[pp], p)
		}
	}
	var out []int
	queue := []int{pid}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		for _, c := range children[p] {
			out = append(out, c)
			queue = append(queue, c)
		}
	}
	return out
}

func (p *dockerProcess) Close() error {
	p.att.Close()
	p.stdout.Close()
	p.stderr.Close()
	return nil
}
