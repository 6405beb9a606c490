package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"

	"github.com/bai-sh/bai/pkg/events"
)

// Runtime runs kernels on this host. The agent calls Prepare, then Create,
// for a new kernel; Exec for each execution in it; Destroy when it ends,
// after every execution was killed and waited for; Exists when it restarts,
// to reconcile its state with what the runtime still has. Every method
// must be idempotent for one kernel id: a retried step after a crash or a
// redelivery does it again.
type Runtime interface {
	// Name is the runtime's name in the heartbeat ("process").
	Name() string
	// Prepare makes the session's image ready (resolves or pulls it). An
	// image the runtime cannot run gives an error wrapping ErrImage.
	Prepare(ctx context.Context, k *events.SessionSpec) error
	// Create creates the kernel k.MainKernelID.
	Create(ctx context.Context, k *events.SessionSpec) error
	// Exists reports whether the kernel still exists.
	Exists(ctx context.Context, k *events.SessionSpec) (bool, error)
	// Exec starts one execution in the kernel.
	Exec(ctx context.Context, k *events.SessionSpec, run events.RunSpec) (Process, error)
	// Destroy removes the kernel and everything it holds.
	Destroy(ctx context.Context, k *events.SessionSpec) error
}

// Process is one running execution. Read Stdout and Stderr to EOF while
// calling Wait; then Close.
type Process interface {
	// Stdout and Stderr are the execution's output; they reach EOF once the
	// execution ended and its output was read.
	Stdout() io.Reader
	Stderr() io.Reader
	// Wait waits for the execution to end and returns its exit code:
	// 128+signal for a death by signal. Anything the execution left
	// running is killed.
	Wait() (int, error)
	// Kill kills the execution and everything it started; Wait then
	// returns. Killing an ended execution does nothing.
	Kill() error
	// Close releases the output readers.
	Close() error
}

// execEnvPath is the PATH of every execution.
const execEnvPath = "/usr/local/bin:/usr/bin:/bin"

// maxInlineArg is the longest code passed as an argument; longer code is
// written to a file in the work directory (Linux refuses one argument over
// 128 KiB).
const maxInlineArg = 64 << 10

// ProcessRuntime runs each kernel as a work directory and each execution
// as a process group started in it, with an environment allowlist.
type ProcessRuntime struct {
	root         string
	interpreters map[string]string
	prefixes     []string // longest first
}

// NewProcessRuntime returns the process runtime keeping work directories
// under root (mode 0700) and running code through interpreters (image
// name prefix → interpreter binary; the longest matching prefix wins).
func NewProcessRuntime(root string, interpreters map[string]string) *ProcessRuntime {
	r := &ProcessRuntime{root: root, interpreters: make(map[string]string, len(interpreters))}
	for p, bin := range interpreters {
		r.interpreters[p] = bin
		r.prefixes = append(r.prefixes, p)
	}
	sort.Slice(r.prefixes, func(i, j int) bool {
		if len(r.prefixes[i]) != len(r.prefixes[j]) {
			return len(r.prefixes[i]) > len(r.prefixes[j])
		}
		return r.prefixes[i] < r.prefixes[j]
	})
	return r
}

// Name is "process".
func (r *ProcessRuntime) Name() string { return "process" }

// Interpreter returns the interpreter binary of an image.
func (r *ProcessRuntime) Interpreter(image string) (string, error) {
	for _, p := range r.prefixes {
		if strings.HasPrefix(image, p) {
			return r.interpreters[p], nil
		}
	}
	return "", fmt.Errorf("%w: no interpreter for image %q", ErrImage, image)
}

// WorkDir is the work directory of a kernel.
func (r *ProcessRuntime) WorkDir(kernelID string) (string, error) {
	if !events.ValidToken(kernelID) {
		return "", fmt.Errorf("bad kernel id %q", kernelID)
	}
	return filepath.Join(r.root, kernelID), nil
}

// Prepare checks that the image has an interpreter.
func (r *ProcessRuntime) Prepare(_ context.Context, k *events.SessionSpec) error {
	bin, err := r.Interpreter(k.Image)
	if err != nil {
		return err
	}
	if _, err := os.Stat(bin); err != nil {
		return fmt.Errorf("%w: interpreter of image %q: %v", ErrImage, k.Image, err)
	}
	return nil
}

// Create makes the kernel's work directory.
func (r *ProcessRuntime) Create(_ context.Context, k *events.SessionSpec) error {
	dir, err := r.WorkDir(k.MainKernelID)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(r.root, 0o700); err != nil {
		return fmt.Errorf("create kernels dir: %w", err)
	}
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("create work dir of kernel %s: %w", k.MainKernelID, err)
	}
	return nil
}

// Exists reports whether the kernel's work directory exists.
func (r *ProcessRuntime) Exists(_ context.Context, k *events.SessionSpec) (bool, error) {
	dir, err := r.WorkDir(k.MainKernelID)
	if err != nil {
		return false, err
	}
	fi, err := os.Stat(dir)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("work dir of kernel %s: %w", k.MainKernelID, err)
	}
	return fi.IsDir(), nil
}

// Destroy removes the kernel's work directory.
func (r *ProcessRuntime) Destroy(_ context.Context, k *events.SessionSpec) error {
	dir, err := r.WorkDir(k.MainKernelID)
	if err != nil {
		return err
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("remove work dir of kernel %s: %w", k.MainKernelID, err)
	}
	return nil
}

// Exec starts code through the image's interpreter, or a command line
// through /bin/sh -c, in its own process group in the work directory.
func (r *ProcessRuntime) Exec(_ context.Context, k *events.SessionSpec, run events.RunSpec) (Process, error) {
	dir, err := r.WorkDir(k.MainKernelID)
	if err != nil {
		return nil, err
	}
	var argv []string
	switch {
	case run.Exec != "":
		argv, err = r.argv(dir, run.ID, "/bin/sh", run.Exec)
	default:
		bin, ierr := r.Interpreter(k.Image)
		if ierr != nil {
			return nil, ierr
		}
		argv, err = r.argv(dir, run.ID, bin, run.Code)
	}
	if err != nil {
		return nil, err
	}
	env := []string{
		"PATH=" + execEnvPath,
		"HOME=" + dir,
		"LANG=C.UTF-8",
		"PYTHONUNBUFFERED=1",
		"TMPDIR=" + dir,
	}
	keys := make([]string, 0, len(k.Env))
	for key := range k.Env {
		keys = append(keys, key)
	}
	sort.Strings(keys)
	for _, key := range keys {
		if key == "" || strings.ContainsAny(key, "=\x00") || strings.ContainsRune(k.Env[key], 0) {
			continue
		}
		env = append(env, key+"="+k.Env[key])
	}

	outR, outW, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("stdout pipe: %w", err)
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		outR.Close()
		outW.Close()
		return nil, fmt.Errorf("stderr pipe: %w", err)
	}
	cmd := &exec.Cmd{
		Path:        argv[0],
		Args:        argv,
		Dir:         dir,
		Env:         env,
		Stdout:      outW,
		Stderr:      errW,
		SysProcAttr: &syscall.SysProcAttr{Setpgid: true},
	}
	err = cmd.Start()
	// The child holds the write ends now; ours must go so EOF can come.
	outW.Close()
	errW.Close()
	if err != nil {
		outR.Close()
		errR.Close()
		return nil, fmt.Errorf("start run %s: %w", run.ID, err)
	}
	return &process{cmd: cmd, pgid: cmd.Process.Pid, stdout: outR, stderr: errR}, nil
}

// argv is [bin, "-c", src], or [bin, file] with src written to a file when
// it is too long for one argument.
func (r *ProcessRuntime) argv(dir, runID, bin, src string) ([]string, error) {
	if len(src) <= maxInlineArg {
		return []string{bin, "-c", src}, nil
	}
	name := filepath.Join(dir, ".bai-run-"+runID)
	if err := os.WriteFile(name, []byte(src), 0o600); err != nil {
		return nil, fmt.Errorf("write code of run %s: %w", runID, err)
	}
	return []string{bin, name}, nil
}

// process is one execution of the process runtime.
type process struct {
	cmd            *exec.Cmd
	pgid           int
	stdout, stderr *os.File

	mu     sync.Mutex
	exited bool // the leader was reaped and the group killed
}

func (p *process) Stdout() io.Reader { return p.stdout }
func (p *process) Stderr() io.Reader { return p.stderr }

func (p *process) Wait() (int, error) {
	err := p.cmd.Wait()
	p.mu.Lock()
	// Whatever the execution left behind goes with it.
	_ = syscall.Kill(-p.pgid, syscall.SIGKILL)
	p.exited = true
	p.mu.Unlock()
	if p.cmd.ProcessState == nil {
		return -1, fmt.Errorf("wait: %w", err)
	}
	ws, ok := p.cmd.ProcessState.Sys().(syscall.WaitStatus)
	switch {
	case !ok:
		return p.cmd.ProcessState.ExitCode(), nil
	case ws.Signaled():
		return 128 + int(ws.Signal()), nil
	default:
		return ws.ExitStatus(), nil
	}
}

func (p *process) Kill() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.exited {
		return nil
	}
	if err := syscall.Kill(-p.pgid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("kill process group %d: %w", p.pgid, err)
	}
	return nil
}

func (p *process) Close() error {
	return errors.Join(p.stdout.Close(), p.stderr.Close())
}
