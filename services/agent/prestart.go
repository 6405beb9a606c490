package agent

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/bai-sh/bai/services/agent/internal/sandboxinit"
)

// Sandbox helpers started ahead. Part of what an execution's sandbox
// costs before its first instruction is the helper's own start: the clone
// of five namespaces, the exec of a Go binary and its runtime's start
// (BenchmarkPrestartedExec: /bin/echo 1 takes 13.9 ms with a helper
// started ahead against 15.6 ms with its own; with the agent's binary as
// its own helper, 27.6 against 34.7 ms). The pool keeps a few helpers that
// have done all that and wait, in their fresh namespaces and as nothing
// but the agent's own children, for the spec of an execution on a pipe
// (sandboxinit.SpecFD). An execution takes one, and the pool starts the
// next one off the execution's path.
//
// What a helper started ahead could miss is the host's mounts made after
// its start: its mount namespace is a copy of the agent's from then. The
// kernels' root is therefore a shared mount (a tmpfs of the agent's where
// it is not a mount point already, mounted before the first kernel is
// mounted or run there; undone by Detach and Purge where no kernel is
// left), so that a
// kernel's work directory, mounted after the helper started, shows in the
// helper's namespace too, and its unmount leaves it. The helper makes
// every mount private as its first step of set-up, as it always did, and
// checks that the work directory it opened is on the kernel's own mount
// (Spec.WorkDirDev). The same mount of its own lets every execution shed
// all the kernels' mounts in one unmount (Spec.KernelsRoot). A helper
// waits at most helperMaxAge: an older one is let go and a new one
// started, so that no execution sees the host's mounts older than that,
// and that no unmounted host file system stays held by a waiting helper
// for longer.

// helperMaxAge is how long a helper started ahead stays usable; an idle
// agent replaces its helpers once a helperMaxAge.
const helperMaxAge = time.Minute

// started is a started process with its pipes: a helper that waits
// for its spec, or any execution just started.
type started struct {
	cmd                    *exec.Cmd
	stdout, stderr, status *os.File // our read ends; status nil: none
	spec                   *os.File // our write end of its SpecFD; nil: none
	at                     time.Time
}

// release lets an unused helper go: EOF on its spec pipe makes it exit.
func (h *started) release() {
	h.spec.Close()
	_ = h.cmd.Wait()
	h.stdout.Close()
	h.stderr.Close()
	h.status.Close()
}

// process is the execution the helper runs once given its spec (nil
// where there is none to give: the spec came in the environment).
func (h *started) process(spec []byte) (*process, error) {
	if h.spec != nil {
		_, err := h.spec.Write(spec)
		if cerr := h.spec.Close(); err == nil {
			err = cerr
		}
		h.spec = nil
		if err != nil {
			_ = h.cmd.Process.Kill()
			_ = h.cmd.Wait()
			h.stdout.Close()
			h.stderr.Close()
			h.status.Close()
			return nil, fmt.Errorf("give the helper its spec: %w", err)
		}
	}
	return &process{proc: h.cmd.Process, pgid: h.cmd.Process.Pid, stdout: h.stdout, stderr: h.stderr, status: h.status}, nil
}

// helperPool keeps up to size helpers started ahead, all with the same
// namespaces (flags).
type helperPool struct {
	exe    string
	flags  uintptr
	size   int
	maxAge time.Duration // helperMaxAge

	mu      sync.Mutex
	ready   []*started // oldest first
	filling bool
	closed  bool
	renewal *time.Timer // runs renew once the oldest is past its age
	fillers sync.WaitGroup
}

// take returns a helper started ahead with namespaces flags, or nil, and
// starts the pool's refill.
func (p *helperPool) take(flags uintptr) *started {
	if p == nil {
		return nil
	}
	var h *started
	p.mu.Lock()
	old := p.agedLocked()
	if flags == p.flags && len(p.ready) > 0 {
		h, p.ready = p.ready[0], p.ready[1:]
	}
	p.fillLocked()
	p.mu.Unlock()
	for _, o := range old {
		o.release()
	}
	return h
}

// agedLocked takes the helpers past their age out of the pool.
func (p *helperPool) agedLocked() []*started {
	n := 0
	for n < len(p.ready) && time.Since(p.ready[n].at) > p.maxAge {
		n++
	}
	old := p.ready[:n:n]
	p.ready = p.ready[n:]
	return old
}

// renew replaces the helpers past their age on an idle agent, so that
// the next execution still finds one.
func (p *helperPool) renew() {
	p.mu.Lock()
	p.renewal = nil
	old := p.agedLocked()
	p.fillLocked()
	if !p.filling {
		p.armLocked() // none was old yet: the oldest now is younger
	}
	p.mu.Unlock()
	for _, o := range old {
		o.release()
	}
}

// armLocked sets the renewal for when the oldest waiting helper is past
// its age, unless one is set.
func (p *helperPool) armLocked() {
	if p.renewal != nil || p.closed || len(p.ready) == 0 {
		return
	}
	p.renewal = time.AfterFunc(time.Until(p.ready[0].at.Add(p.maxAge))+time.Millisecond, p.renew)
}

// fillLocked starts the refill unless one runs or the pool is full.
func (p *helperPool) fillLocked() {
	if p.filling || p.closed || len(p.ready) >= p.size {
		return
	}
	p.filling = true
	p.fillers.Add(1)
	go p.fill()
}

// fill starts helpers until the pool is full. A failed start ends the
// refill: the next take tries again.
func (p *helperPool) fill() {
	defer p.fillers.Done()
	for {
		h, err := startHelper(p.exe, p.flags)
		p.mu.Lock()
		if err != nil || p.closed {
			p.filling = false
			p.mu.Unlock()
			if h != nil {
				h.release()
			}
			return
		}
		p.ready = append(p.ready, h)
		if len(p.ready) >= p.size {
			p.filling = false
			p.armLocked()
			p.mu.Unlock()
			return
		}
		p.mu.Unlock()
	}
}

// close lets every waiting helper go and waits for the refill to end.
func (p *helperPool) close() {
	if p == nil {
		return
	}
	p.mu.Lock()
	p.closed = true
	ready := p.ready
	p.ready = nil
	if p.renewal != nil {
		p.renewal.Stop()
	}
	p.mu.Unlock()
	p.fillers.Wait()
	for _, h := range ready {
		h.release()
	}
}

// startHelper starts a helper in new namespaces flags that waits for its
// spec on sandboxinit.SpecFD.
func startHelper(exe string, flags uintptr) (*started, error) {
	return startPiped(helperCmd(exe, flags, sandboxinit.SpecFromFD), true, true)
}

// startPiped starts cmd with its stdout and stderr on pipes, and where
// asked a pipe at sandboxinit.StatusFD, for the helper's report, and one
// at sandboxinit.SpecFD, for its spec.
func startPiped(cmd *exec.Cmd, status, spec bool) (*started, error) {
	var ours, theirs []*os.File
	// pipe makes a pipe whose read end is ours where weRead, else its
	// write end.
	pipe := func(weRead bool) (our, their *os.File, err error) {
		r, w, err := os.Pipe()
		if err != nil {
			return nil, nil, err
		}
		if our, their = r, w; !weRead {
			our, their = w, r
		}
		ours, theirs = append(ours, our), append(theirs, their)
		return our, their, nil
	}
	h := &started{cmd: cmd, at: time.Now()}
	var outW, errW, statusW, specR *os.File
	var errs [4]error
	h.stdout, outW, errs[0] = pipe(true)
	h.stderr, errW, errs[1] = pipe(true)
	if status {
		h.status, statusW, errs[2] = pipe(true)
		cmd.ExtraFiles = append(cmd.ExtraFiles, statusW) // StatusFD
	}
	if spec {
		h.spec, specR, errs[3] = pipe(false)
		cmd.ExtraFiles = append(cmd.ExtraFiles, specR) // SpecFD
	}
	if err := errors.Join(errs[:]...); err != nil {
		closeFiles(ours)
		closeFiles(theirs)
		return nil, fmt.Errorf("pipes: %w", err)
	}
	cmd.Stdout, cmd.Stderr = outW, errW
	err := cmd.Start()
	// The child holds its ends now; ours must go so EOF can come.
	closeFiles(theirs)
	if err != nil {
		closeFiles(ours)
		return nil, err
	}
	return h, nil
}

// helperCmd is the helper's command; spec is its Env's value.
//
// The helper is a Go program that runs on one thread and allocates next
// to nothing: one P and no collector make its runtime's start cheaper
// (bai-bench -scenario runpath: about 3 ms of CPU less per execution).
// The execution gets Spec.Env, not these.
func helperCmd(exe string, flags uintptr, spec string) *exec.Cmd {
	return &exec.Cmd{
		Path:        exe,
		Args:        []string{"bai-sandbox"},
		Dir:         "/",
		Env:         []string{sandboxInitEnv + "=" + spec, "GOMAXPROCS=1", "GOGC=off"},
		SysProcAttr: &syscall.SysProcAttr{Setpgid: true, Cloneflags: flags},
	}
}

// shareRoot makes the kernels' root a shared mount, recursively (see
// above): a tmpfs of its own (source sandboxinit.KernelsRootSource, by
// which unshareRoot knows it for its own and other agents' sandboxes know
// it to hide) mounted there first where it is not a mount point. A root with mounts under it but
// none of its own (kernels left by an agent from before the pool) is
// refused: a mount now would hide their work directories.
//
// The kernels' directories are mount points only, each kernel's own tmpfs
// mounted on it, so they need no disk: on a tmpfs their mkdir and rmdir
// cost a fraction of a journalled file system's, under a batch's churn
// (BENCHMARKS.md, "Ninth round"). And after a reboot, which took every
// kernel's tmpfs, the kernels' directories are gone with them, so the
// agent reports those kernels ended rather than adopting empty
// directories on the host's disk.
func shareRoot(root string) error {
	if err := os.MkdirAll(root, 0o700); err != nil {
		return err
	}
	mounted, under, _, err := rootMounts(root)
	if err != nil {
		return err
	}
	if !mounted {
		if under {
			return fmt.Errorf("%s has kernels mounted from before, not on a mount of its own", root)
		}
		// What a reboot left of kernels (or an agent from before this
		// tmpfs): their directories, empty, which the tmpfs would hide
		// for good. A directory that is not empty stays, hidden.
		if ents, err := os.ReadDir(root); err == nil {
			for _, e := range ents {
				_ = syscall.Rmdir(filepath.Join(root, e.Name()))
			}
		}
		if err := syscall.Mount(sandboxinit.KernelsRootSource, root, "tmpfs", syscall.MS_NOSUID|syscall.MS_NODEV|syscall.MS_NOEXEC,
			"mode=0700,size=1m"); err != nil {
			return fmt.Errorf("mount %s: %w", root, err)
		}
	}
	if err := syscall.Mount("", root, "", syscall.MS_SHARED|syscall.MS_REC, ""); err != nil {
		return fmt.Errorf("share %s: %w", root, err)
	}
	return nil
}

// unshareRoot undoes shareRoot's mount (this process's or an earlier
// one's: its tmpfs, or the bind on itself of a version before it) where
// nothing is mounted under it any more. A mount of another file system
// there (an operator's disk for the kernels) stays.
func unshareRoot(root string) error {
	mounted, under, source, err := rootMounts(root)
	if err != nil || !mounted || under || (source != sandboxinit.KernelsRootSource && isMountPoint(root)) {
		return err
	}
	if err := syscall.Unmount(root, 0); err != nil && !errors.Is(err, syscall.EINVAL) {
		return fmt.Errorf("unmount %s: %w", root, err)
	}
	return nil
}

// rootMounts says whether root is a mount point, and the source of the
// mount seen there, and whether anything is mounted under it.
func rootMounts(root string) (mounted, under bool, source string, err error) {
	abs, err := filepath.Abs(root)
	if err == nil {
		abs, err = filepath.EvalSymlinks(abs)
	}
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return false, false, "", nil
		}
		return false, false, "", err
	}
	points, err := sandboxinit.MountPoints()
	if err != nil {
		return false, false, "", err
	}
	for _, p := range points {
		if p.Point == abs {
			mounted, source = true, p.Source // the last one stacked there is the one seen
		}
		under = under || strings.HasPrefix(p.Point, abs+"/")
	}
	return mounted, under, source, nil
}

// closeFiles closes every file of fs that is not nil.
func closeFiles(fs []*os.File) {
	for _, f := range fs {
		if f != nil {
			f.Close()
		}
	}
}
