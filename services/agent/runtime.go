package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/bai-sh/bai/pkg/events"
	"github.com/bai-sh/bai/pkg/slots"
	"github.com/bai-sh/bai/services/agent/internal/safefs"
	"github.com/bai-sh/bai/services/agent/internal/sandboxinit"
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
	sb           *sandbox // nil: plain processes
	gpus         *GPUAllocator
}

// SetGPUs gives kernels devices from a: CUDA_VISIBLE_DEVICES names a
// kernel's devices, and is empty for a kernel without GPU slots.
func (r *ProcessRuntime) SetGPUs(a *GPUAllocator) { r.gpus = a }

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

// Sandbox makes the runtime contain its kernels where the host allows it
// (see SandboxOptions); it returns what it could not set up, to be said
// once at start. Call it before the first kernel is created.
func (r *ProcessRuntime) Sandbox(opts SandboxOptions) []string {
	r.sb = newSandbox(r.root, opts)
	if !r.sb.active {
		r.sb.cg = nil
	}
	r.sb.hide = append([]string(nil), opts.Hide...)
	return r.sb.notes
}

// CgroupMount says what the sandbox did to the host's cgroup2 mount
// (SandboxOptions.KeepCgroupMount): done is "" where it did nothing, err
// why it could not.
func (r *ProcessRuntime) CgroupMount() (done string, err error) {
	if r.sb == nil {
		return "", nil
	}
	return r.sb.cgroupMount, r.sb.cgroupMountErr
}

// sandboxed reports whether kernels run in namespaces and cgroups.
func (r *ProcessRuntime) sandboxed() bool { return r.sb != nil && r.sb.active }

// Sandboxed reports whether kernels run in namespaces, as their own uid,
// under the sandbox's mounts.
func (r *ProcessRuntime) Sandboxed() bool { return r.sandboxed() }

// kernelLimits are the cgroup limits of a kernel from its slots.
func (r *ProcessRuntime) kernelLimits(k *events.SessionSpec) (limits, error) {
	l := limits{pids: r.sb.opts.Pids, mem: r.sb.opts.DefaultMem}
	set, err := slots.ParseMap(k.Slots)
	if err != nil {
		return l, fmt.Errorf("slots of kernel %s: %w", k.MainKernelID, err)
	}
	if m := set["mem"]; m > 0 {
		l.mem = int64(m)
	}
	if c := set["cpu"]; c > 0 {
		l.cpu = int64(c)
	}
	return l, nil
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

// CgroupJoinFiles are the files a sandbox helper writes to, to join the
// cgroups of kernel kernelID (none without a sandbox with cgroups): for a
// helper started by hand, as the bench's runpath scenario does.
func (r *ProcessRuntime) CgroupJoinFiles(kernelID string) []string {
	if r.sb == nil || r.sb.cg == nil {
		return nil
	}
	return r.sb.cg.joinFiles(kernelID)
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
	r.sb.share(r.root) // before the kernel's directory: a tmpfs goes there
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("create work dir of kernel %s: %w", k.MainKernelID, err)
	}
	if r.gpus != nil {
		set, err := slots.ParseMap(k.Slots)
		if err != nil {
			return fmt.Errorf("slots of kernel %s: %w", k.MainKernelID, err)
		}
		if _, err := r.gpus.Allocate(k.MainKernelID, set); err != nil {
			return err
		}
	}
	if !r.sandboxed() {
		return nil
	}
	uid := kernelUID(k.MainKernelID)
	if !isMountPoint(dir) {
		opts := fmt.Sprintf("size=%d,mode=0700,uid=%d,gid=%d", r.sb.opts.WorkDirSize, uid, uid)
		if err := syscall.Mount(sandboxinit.KernelSource, dir, "tmpfs", syscall.MS_NOSUID|syscall.MS_NODEV, opts); err != nil {
			return fmt.Errorf("mount work dir of kernel %s: %w", k.MainKernelID, err)
		}
	}
	if r.sb.cg != nil {
		l, err := r.kernelLimits(k)
		if err != nil {
			return err
		}
		if err := r.sb.cg.create(k.MainKernelID, l); err != nil {
			return fmt.Errorf("cgroup of kernel %s: %w", k.MainKernelID, err)
		}
	}
	return nil
}

// isMountPoint reports whether dir is on another device than its parent.
func isMountPoint(dir string) bool {
	var a, b syscall.Stat_t
	if syscall.Stat(dir, &a) != nil || syscall.Stat(filepath.Dir(dir), &b) != nil {
		return false
	}
	return a.Dev != b.Dev
}

// Exists reports whether the kernel's work directory exists.
func (r *ProcessRuntime) Exists(_ context.Context, k *events.SessionSpec) (bool, error) {
	dir, err := r.WorkDir(k.MainKernelID)
	if err != nil {
		return false, err
	}
	// The kernels' root mounted first (shareRoot): after a reboot it holds
	// none of the kernels of before, whose files went with it.
	r.sb.share(r.root)
	fi, err := os.Stat(dir)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("work dir of kernel %s: %w", k.MainKernelID, err)
	}
	return fi.IsDir(), nil
}

// Destroy kills whatever the kernel still runs and removes its cgroups and
// work directory.
func (r *ProcessRuntime) Destroy(_ context.Context, k *events.SessionSpec) error {
	return r.destroy(k.MainKernelID)
}

func (r *ProcessRuntime) destroy(id string) error {
	dir, err := r.WorkDir(id)
	if err != nil {
		return err
	}
	r.gpus.Release(id)
	if r.sandboxed() {
		if r.sb.cg != nil {
			if err := r.sb.cg.remove(id); err != nil {
				return fmt.Errorf("kernel %s: %w", id, err)
			}
		}
		if isMountPoint(dir) {
			if err := syscall.Unmount(dir, syscall.MNT_DETACH); err != nil {
				return fmt.Errorf("unmount work dir of kernel %s: %w", id, err)
			}
		}
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("remove work dir of kernel %s: %w", id, err)
	}
	return nil
}

// Adopt kills what a kernel still runs after the agent restarted: its
// executions' output went with the agent before.
func (r *ProcessRuntime) Adopt(_ context.Context, k *events.SessionSpec) error {
	if r.gpus != nil {
		set, err := slots.ParseMap(k.Slots)
		if err == nil {
			_, err = r.gpus.Allocate(k.MainKernelID, set)
		}
		if err != nil {
			return err
		}
	}
	if !r.sandboxed() {
		return nil
	}
	r.sb.share(r.root)
	if r.sb.cg == nil {
		return nil
	}
	return r.sb.cg.kill(k.MainKernelID)
}

// Purge destroys every kernel of the runtime and removes the parent of
// their cgroups: for tests and for an agent's removal.
func (r *ProcessRuntime) Purge(ctx context.Context) error {
	if r.sb != nil {
		r.sb.pool.close()
		r.sb.server.close()
	}
	if _, err := r.Reap(ctx, nil); err != nil {
		return err
	}
	if r.sandboxed() {
		if err := unshareRoot(r.root); err != nil {
			return err
		}
	}
	if r.sandboxed() && r.sb.cg != nil {
		for _, p := range r.sb.cg.parents {
			if err := syscall.Rmdir(p); err != nil && !errors.Is(err, syscall.ENOENT) {
				return fmt.Errorf("remove cgroup parent: %w", err)
			}
		}
	}
	return nil
}

// Detach is the runtime's part of an agent's clean stop. The helpers
// started ahead go. Kernels stay, by design:
// their work directories (mounted tmpfs) and cgroups are left for the
// next start to adopt, with nothing of theirs running (every execution
// was killed and waited for; Close kills whatever a kernel's cgroup still
// holds, a process that left its execution's process group). Where no
// kernel is left, the parents of the kernels' cgroups are removed too:
// then nothing of the runtime remains on the host.
func (r *ProcessRuntime) Detach() error {
	if r.sb != nil {
		r.sb.pool.close()
		r.sb.server.close()
	}
	if r.sandboxed() {
		if err := unshareRoot(r.root); err != nil {
			return err
		}
	}
	if !r.sandboxed() || r.sb.cg == nil {
		return nil
	}
	ids, err := r.sb.cg.list()
	if err != nil {
		return fmt.Errorf("list kernel cgroups: %w", err)
	}
	var errs []error
	for _, id := range ids {
		if err := r.sb.cg.kill(id); err != nil {
			errs = append(errs, fmt.Errorf("kernel %s: %w", id, err))
		}
	}
	if len(ids) == 0 {
		for _, p := range r.sb.cg.parents {
			if err := syscall.Rmdir(p); err != nil && !errors.Is(err, syscall.ENOENT) && !errors.Is(err, syscall.EBUSY) {
				errs = append(errs, fmt.Errorf("remove cgroup parent: %w", err))
			}
		}
	}
	return errors.Join(errs...)
}

// Kernels lists the kernels the runtime has: a work directory or a
// cgroup, sorted.
func (r *ProcessRuntime) Kernels() ([]string, error) {
	r.sb.share(r.root) // as Exists
	found := map[string]bool{}
	ents, err := os.ReadDir(r.root)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("list kernels: %w", err)
	}
	for _, e := range ents {
		found[e.Name()] = true
	}
	if r.sandboxed() && r.sb.cg != nil {
		ids, err := r.sb.cg.list()
		if err != nil {
			return nil, fmt.Errorf("list kernel cgroups: %w", err)
		}
		for _, id := range ids {
			found[id] = true
		}
	}
	ids := make([]string, 0, len(found))
	for id := range found {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids, nil
}

// Reap destroys the kernels with a work directory or a cgroup that keep
// does not have.
func (r *ProcessRuntime) Reap(_ context.Context, keep map[string]bool) ([]string, error) {
	found, err := r.Kernels()
	if err != nil {
		return nil, err
	}
	var reaped []string
	var errs []error
	for _, id := range found {
		if keep[id] || !events.ValidToken(id) {
			continue
		}
		if err := r.destroy(id); err != nil {
			errs = append(errs, err)
			continue
		}
		reaped = append(reaped, id)
	}
	sort.Strings(reaped)
	return reaped, errors.Join(errs...)
}

// Exec starts code through the image's interpreter, or a command line
// through /bin/sh -c, in its own process group in the work directory.
func (r *ProcessRuntime) Exec(_ context.Context, k *events.SessionSpec, run events.RunSpec) (Process, error) {
	dir, err := r.WorkDir(k.MainKernelID)
	if err != nil {
		return nil, err
	}
	home, tmp := dir, dir
	if r.sandboxed() {
		home, tmp = KernelWorkDir, "/tmp"
	}
	var argv, fallback []string
	switch {
	case run.Exec != "" && r.sandboxed():
		if words, ok := plainCommand(run.Exec); ok {
			// One process less than through the shell, which the
			// helper still runs where the words cannot be executed.
			argv, fallback = words, []string{"/bin/sh", "-c", run.Exec}
			break
		}
		fallthrough
	case run.Exec != "":
		argv, err = r.argv(k.MainKernelID, home, run.ID, "/bin/sh", run.Exec)
	default:
		bin, ierr := r.Interpreter(k.Image)
		if ierr != nil {
			return nil, ierr
		}
		argv, err = r.argv(k.MainKernelID, home, run.ID, bin, run.Code)
	}
	if err != nil {
		return nil, err
	}
	gpus, hasGPUs := r.gpus.Visible(k.MainKernelID)
	env := execEnv([]string{
		"PATH=" + r.execPath(k.Image),
		"HOME=" + home,
		"LANG=C.UTF-8",
		"PYTHONUNBUFFERED=1",
		"TMPDIR=" + tmp,
	}, k.Env, gpus, hasGPUs)

	if !r.sandboxed() {
		h, err := startPiped(&exec.Cmd{
			Path:        argv[0],
			Args:        argv,
			Dir:         dir,
			Env:         env,
			SysProcAttr: &syscall.SysProcAttr{Setpgid: true},
		}, false, false)
		if err != nil {
			return nil, fmt.Errorf("start run %s: %w", run.ID, err)
		}
		return h.process(nil)
	}
	var before [2]int64
	if r.sb.cg != nil {
		before[0], before[1] = r.sb.cg.counters(k.MainKernelID)
	}
	p, err := r.sandboxStart(k, dir, argv, fallback, env)
	if err != nil {
		return nil, fmt.Errorf("start run %s: %w", run.ID, err)
	}
	cg, id, l := r.sb.cg, k.MainKernelID, r.sb.opts
	p.reason = func() string {
		if cg != nil {
			oom, pids := cg.counters(id)
			switch {
			case oom > before[0]:
				return string(events.ReasonOOMKilled)
			case pids > before[1]:
				return string(events.ReasonPidsLimit) + fmt.Sprintf(" (at most %d processes)", l.Pids)
			}
		}
		var fs syscall.Statfs_t
		if syscall.Statfs(dir, &fs) == nil && fs.Bavail == 0 && fs.Blocks > 0 {
			return string(events.ReasonDiskFull) + fmt.Sprintf(" (work dir limit %d bytes)", l.WorkDirSize)
		}
		return ""
	}
	return p, nil
}

// sandboxStart starts argv in its sandbox, or fallback where argv cannot
// be executed: through the spawn server where there is one and it can
// (sandboxinit.Spawn), else through the sandbox helper, one started
// ahead where the pool has one.
func (r *ProcessRuntime) sandboxStart(k *events.SessionSpec, dir string, argv, fallback, env []string) (*process, error) {
	var st syscall.Stat_t
	if err := syscall.Stat(dir, &st); err != nil {
		return nil, fmt.Errorf("work dir: %w", err)
	}
	spec := initSpec{
		Argv:       argv,
		Fallback:   fallback,
		Env:        env,
		WorkDir:    dir,
		WorkDirDev: st.Dev,
		Hide:       append([]string{filepath.Dir(r.root)}, r.sb.hide...),
		// A kernel opens only its own GPUs' device files, whatever
		// CUDA_VISIBLE_DEVICES it sets itself.
		HideFiles: r.gpus.Hidden(k.MainKernelID),
		UID:       kernelUID(k.MainKernelID),
		Hostname:  hostname(k.MainKernelID),
		TmpSize:   r.sb.opts.TmpSize,
		ShmSize:   r.sb.opts.ShmSize,
		NoFile:    r.sb.opts.NoFile,
		Bin:       r.kernelLinks(k.Image),
	}
	if r.sb.cg != nil {
		spec.Cgroups = r.sb.cg.joinFiles(k.MainKernelID)
	}
	r.sb.share(r.root)
	if r.sb.bound.Load() {
		spec.KernelsRoot = r.root
	}
	flags := r.sb.cloneFlags(k.Network)
	if r.sb.server != nil {
		p, err := r.spawnProcess(&spec, flags)
		if !errors.Is(err, sandboxinit.ErrNoSpawn) {
			return p, err
		}
	}
	data, err := json.Marshal(spec)
	if err != nil {
		return nil, err
	}
	if h := r.sb.pool.take(flags); h != nil {
		if p, err := h.process(data); err == nil {
			return p, nil
		}
		// It died waiting: a helper of its own, as below.
	}
	h, err := startPiped(helperCmd(r.sb.exe, flags, string(data)), true, false)
	if err != nil {
		return nil, err
	}
	return h.process(nil)
}

// plainCommand returns the words of a command line that the shell would
// only split and execute: ASCII words of letters, digits and _-./,:+@%=
// apart from spaces and tabs, the first one a path (with a slash, so the
// shell would look up neither a builtin nor PATH) and no assignment. It
// says false for anything else: quotes, expansions, redirections,
// separators, globs, comments, a newline.
func plainCommand(line string) ([]string, bool) {
	if len(line) > maxInlineArg {
		return nil, false
	}
	for i := 0; i < len(line); i++ {
		c := line[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case strings.IndexByte("_-./,:+@%= \t", c) >= 0:
		default:
			return nil, false
		}
	}
	words := strings.FieldsFunc(line, func(c rune) bool { return c == ' ' || c == '\t' })
	if len(words) == 0 || !strings.Contains(words[0], "/") || strings.Contains(words[0], "=") {
		return nil, false
	}
	return words, true
}

// hostname is a kernel's host name: its id, cut to 63 characters.
func hostname(id string) string {
	if len(id) > 63 {
		return id[:63]
	}
	return id
}

// argv is [bin, "-c", src], or [bin, file] with src written to the file
// ".bai-run-<run id>" of the kernel's work directory when it is too long
// for one argument (see WriteFile). home is the work directory as the
// kernel sees it.
func (r *ProcessRuntime) argv(kernelID, home, runID, bin, src string) ([]string, error) {
	if len(src) <= maxInlineArg {
		return []string{bin, "-c", src}, nil
	}
	if err := events.CheckRunID(runID); err != nil {
		return nil, err
	}
	name := ".bai-run-" + runID
	if err := r.WriteFile(kernelID, name, []byte(src)); err != nil {
		return nil, fmt.Errorf("write code of run %s: %w", runID, err)
	}
	return []string{bin, filepath.Join(home, name)}, nil
}

// WriteFile writes data to the file rel (slash-separated) of a kernel's
// work directory, and the directories to it, owned by the kernel's uid
// where it runs as one (sandboxed), mode 0644 (directories 0755). The work
// directory is the kernel's to change at any moment: nothing in it is
// trusted. A symlink anywhere on the path, whatever it points to, makes
// the write fail; what has the file's name is removed first, so a write
// never goes through a link (safefs).
func (r *ProcessRuntime) WriteFile(kernelID, rel string, data []byte) error {
	dir, err := r.WorkDir(kernelID)
	if err != nil {
		return err
	}
	root, err := safefs.Open(dir)
	if err != nil {
		// Without the host path, which the error goes to the kernel's
		// output.
		return fmt.Errorf("work dir of kernel %s: %w", kernelID, errors.Unwrap(err))
	}
	defer root.Close()
	own := safefs.Creator
	if r.sandboxed() {
		uid := kernelUID(kernelID)
		own = safefs.Owner{UID: uid, GID: uid}
	}
	return root.WriteFile(rel, data, 0o644, own)
}

// spawnProcess starts an execution without a helper of its own, through
// the spawn server (sandboxinit.Spawn): its stdin /dev/null, its output
// on pipes, and its init's report on a third.
func (r *ProcessRuntime) spawnProcess(spec *initSpec, flags uintptr) (*process, error) {
	tree, err := workTree(spec) // first: where it cannot be made, the helper starts it
	if err != nil {
		return nil, err
	}
	defer syscall.Close(tree) // the init has its own
	var ours [3]*os.File      // stdout, stderr, status: read here
	theirs := [3]int{-1, -1, -1}
	defer func() {
		for _, fd := range theirs {
			if fd >= 0 {
				syscall.Close(fd)
			}
		}
	}()
	for i := range ours {
		if ours[i], theirs[i], err = spawnPipe(); err != nil {
			closeFiles(ours[:])
			return nil, err
		}
	}
	pidfd, err := r.sb.server.spawn(spec, flags, theirs, tree)
	if err != nil {
		closeFiles(ours[:])
		return nil, err
	}
	return &process{pidfd: pidfd, stdout: ours[0], stderr: ours[1], status: ours[2]}, nil
}

// workTree is a detached copy of the mount of spec's work directory
// (open_tree), for the spawn server, whose namespace has none of the
// kernels' mounts; checked to be the kernel's mount (Spec.WorkDirDev),
// not the directory under it. Where open_tree is refused, the helper
// starts the execution (sandboxinit.ErrNoSpawn).
func workTree(spec *initSpec) (int, error) {
	tree, err := unix.OpenTree(unix.AT_FDCWD, spec.WorkDir, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC)
	if err != nil {
		if errors.Is(err, syscall.ENOSYS) || errors.Is(err, syscall.EPERM) {
			return -1, sandboxinit.ErrNoSpawn
		}
		return -1, fmt.Errorf("work dir: %w", err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(tree, &st); err != nil || (spec.WorkDirDev != 0 && st.Dev != spec.WorkDirDev) {
		syscall.Close(tree)
		return -1, errors.New("work dir: not the kernel's mount")
	}
	return tree, nil
}

// spawnPipe is a pipe whose read end is read here through the runtime's
// poller and whose write end, blocking, goes to a spawned execution. It
// makes five system calls where os.Pipe and then Fd make eleven.
func spawnPipe() (*os.File, int, error) {
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		return nil, -1, os.NewSyscallError("pipe2", err)
	}
	if _, err := unix.FcntlInt(uintptr(p[0]), unix.F_SETFL, unix.O_NONBLOCK); err != nil {
		syscall.Close(p[0])
		syscall.Close(p[1])
		return nil, -1, os.NewSyscallError("fcntl", err)
	}
	// Non-blocking, it is taken into the poller.
	return os.NewFile(uintptr(p[0]), "|0"), p[1], nil
}

// process is one execution of the process runtime.
type process struct {
	proc           *os.Process // the helper; nil: spawned
	pidfd          *os.File    // a spawned execution's init (spawnProcess)
	pgid           int
	stdout, stderr *os.File

	reason func() string // why it was killed, after Wait; nil: unknown
	status *os.File      // the sandbox helper's exit code report; nil: none

	mu     sync.Mutex
	exited bool // the leader was reaped and the group killed
}

// Reason says which limit of its kernel the execution hit ("oom-killed"),
// or "". Call it after Wait.
func (p *process) Reason() string {
	if p.reason == nil {
		return ""
	}
	return p.reason()
}

func (p *process) Stdout() io.Reader { return p.stdout }
func (p *process) Stderr() io.Reader { return p.stderr }

func (p *process) Wait() (int, error) {
	if p.pidfd != nil {
		// A spawned execution's init reports its code, a set-up that
		// failed included; without a report it was killed (Kill, or the
		// host), and the namespace's processes with it.
		code, ok := p.reported()
		p.mu.Lock()
		p.exited = true
		p.pidfd.Close()
		p.mu.Unlock()
		if !ok {
			code = 128 + int(syscall.SIGKILL)
		}
		return code, nil
	}
	if code, ok := p.reported(); ok {
		// Nothing of the execution runs any more; the helper is ending.
		p.mu.Lock()
		p.exited = true
		p.mu.Unlock()
		go p.proc.Wait() //nolint:errcheck // reaps it, in a few milliseconds
		return code, nil
	}
	state, err := p.proc.Wait()
	p.mu.Lock()
	// Whatever the execution left behind goes with it.
	_ = syscall.Kill(-p.pgid, syscall.SIGKILL)
	p.exited = true
	p.mu.Unlock()
	if err != nil {
		return -1, fmt.Errorf("wait: %w", err)
	}
	ws, ok := state.Sys().(syscall.WaitStatus)
	switch {
	case !ok:
		return state.ExitCode(), nil
	case ws.Signaled():
		return 128 + int(ws.Signal()), nil
	default:
		return ws.ExitStatus(), nil
	}
}

// reported reads the exit code the sandbox helper reports once the
// execution and everything it left ended; false if it reported none (it
// failed or was killed) or there is no helper.
func (p *process) reported() (int, bool) {
	if p.status == nil {
		return 0, false
	}
	defer p.status.Close()
	data, err := io.ReadAll(io.LimitReader(p.status, 16))
	if err != nil || len(data) == 0 {
		return 0, false
	}
	code, err := strconv.Atoi(string(data))
	if err != nil {
		return 0, false
	}
	return code, true
}

func (p *process) Kill() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.exited {
		return nil
	}
	if p.pidfd != nil {
		// The init: the kernel kills its namespace's every process.
		if err := unix.PidfdSendSignal(int(p.pidfd.Fd()), unix.SIGKILL, nil, 0); err != nil && !errors.Is(err, syscall.ESRCH) {
			return fmt.Errorf("kill the init: %w", err)
		}
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
