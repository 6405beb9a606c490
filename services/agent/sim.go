package agent

import (
	"context"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/bai-sh/bai/pkg/events"
)

// SimConfig configures the sim runtime: each step waits its delay and does
// no work.
type SimConfig struct {
	// PrepareDelay, CreateDelay and DestroyDelay are how long Prepare,
	// Create and Destroy take. Default 0.
	PrepareDelay, CreateDelay, DestroyDelay time.Duration
	// ExecDelay is how long each execution runs before it exits. Default 0.
	ExecDelay time.Duration
	// ExitCode is every execution's exit code. Default 0.
	ExitCode int
	// FailImagePrefix: an image with this prefix fails Prepare with
	// ErrImage. Default "" (every image is accepted).
	FailImagePrefix string
	// SlowImagePrefix: Prepare of an image with this prefix (a pull)
	// waits until SlowGate is closed, or its context ends. Default ""
	// (none).
	SlowImagePrefix string
	SlowGate        <-chan struct{}
	// StateNoSync: the agent's state db is written without fsync. For
	// many simulated agents sharing one machine's disk, where their
	// fsyncs (four per kernel start) stand for work that real agents do
	// on their own hosts; an agent so configured is not crash safe.
	StateNoSync bool
}

// SimRuntime is a runtime whose kernels pass through the real lifecycle
// with configurable delays and do no work: for benchmarks and tests of the
// rest of the system. It keeps its kernels in memory only.
type SimRuntime struct {
	cfg SimConfig

	mu      sync.Mutex
	kernels map[string]bool // kernel ids created and not destroyed
}

// NewSimRuntime returns a sim runtime.
func NewSimRuntime(cfg SimConfig) *SimRuntime {
	return &SimRuntime{cfg: cfg, kernels: make(map[string]bool)}
}

// Name is "sim".
func (r *SimRuntime) Name() string { return "sim" }

// simWait waits d, or until ctx ends.
func simWait(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func simKernelID(k *events.SessionSpec) error {
	if !events.ValidToken(k.MainKernelID) {
		return fmt.Errorf("bad kernel id %q", k.MainKernelID)
	}
	return nil
}

// Prepare waits PrepareDelay; an image with FailImagePrefix fails.
func (r *SimRuntime) Prepare(ctx context.Context, k *events.SessionSpec) error {
	if r.cfg.FailImagePrefix != "" && strings.HasPrefix(k.Image, r.cfg.FailImagePrefix) {
		return fmt.Errorf("%w: sim runtime refuses image %q", ErrImage, k.Image)
	}
	if r.cfg.SlowImagePrefix != "" && strings.HasPrefix(k.Image, r.cfg.SlowImagePrefix) {
		select {
		case <-r.cfg.SlowGate:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return simWait(ctx, r.cfg.PrepareDelay)
}

// Create waits CreateDelay and remembers the kernel.
func (r *SimRuntime) Create(ctx context.Context, k *events.SessionSpec) error {
	if err := simKernelID(k); err != nil {
		return err
	}
	if err := simWait(ctx, r.cfg.CreateDelay); err != nil {
		return err
	}
	r.mu.Lock()
	r.kernels[k.MainKernelID] = true
	r.mu.Unlock()
	return nil
}

// Exists reports whether the kernel was created and not destroyed.
func (r *SimRuntime) Exists(_ context.Context, k *events.SessionSpec) (bool, error) {
	if err := simKernelID(k); err != nil {
		return false, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.kernels[k.MainKernelID], nil
}

// Destroy waits DestroyDelay and forgets the kernel.
func (r *SimRuntime) Destroy(ctx context.Context, k *events.SessionSpec) error {
	if err := simKernelID(k); err != nil {
		return err
	}
	if err := simWait(ctx, r.cfg.DestroyDelay); err != nil {
		return err
	}
	r.mu.Lock()
	delete(r.kernels, k.MainKernelID)
	r.mu.Unlock()
	return nil
}

// Len is how many kernels exist.
func (r *SimRuntime) Len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.kernels)
}

// Exec starts an execution that prints nothing and exits ExitCode after
// ExecDelay; killed, it exits 137 at once. The kernel must exist.
func (r *SimRuntime) Exec(_ context.Context, k *events.SessionSpec, run events.RunSpec) (Process, error) {
	if ok, err := r.Exists(context.Background(), k); err != nil {
		return nil, err
	} else if !ok {
		return nil, fmt.Errorf("start run %s: kernel %s does not exist", run.ID, k.MainKernelID)
	}
	return &simProcess{delay: r.cfg.ExecDelay, code: r.cfg.ExitCode, killed: make(chan struct{})}, nil
}

// simProcess is one execution of the sim runtime.
type simProcess struct {
	delay time.Duration
	code  int

	once   sync.Once
	killed chan struct{}
}

func (p *simProcess) Stdout() io.Reader { return strings.NewReader("") }
func (p *simProcess) Stderr() io.Reader { return strings.NewReader("") }

func (p *simProcess) Wait() (int, error) {
	if p.delay <= 0 {
		select {
		case <-p.killed:
			return 137, nil
		default:
			return p.code, nil
		}
	}
	t := time.NewTimer(p.delay)
	defer t.Stop()
	select {
	case <-t.C:
		return p.code, nil
	case <-p.killed:
		return 137, nil
	}
}

func (p *simProcess) Kill() error {
	p.once.Do(func() { close(p.killed) })
	return nil
}

func (p *simProcess) Close() error { return nil }
