package sandboxinit

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Spawn starts an execution without a helper process of its own (the
// spawn server calls it: server.go). The sandbox's init is the caller's
// child, cloned into new namespaces (flags) with CLONE_VM onto a stack
// of its own, and runs only raw system calls: it makes the sandbox's
// set-up (a plan made here, from the caller's view of the host's
// mounts), vforks the execution, which joins the kernel's cgroups, makes
// the cgroup view and executes s.Argv (s.Fallback where Argv cannot be
// executed), and then does what the helper does as init: it reaps every
// process until the execution ends, kills what it left, reports the exit
// code on stdio[3] (StatusFD) and exits with it. No Go runtime starts.
// stdio are the execution's standard input, output and error, and the
// report's pipe; tree, where not -1, is a detached copy of the work
// directory's mount (open_tree), which the init attaches at WorkDir
// rather than copying Spec.WorkDir's mount from the caller's namespace.
// A set-up that fails is reported on the execution's standard error, as
// the helper reports it, with exit code 127. pidfd is the init's
// (CLONE_PIDFD), the caller's to close; done must be called once the
// init was reaped. ErrNoSpawn where this machine or spec cannot
// (CanSpawn; no Spec.KernelsRoot): the helper then.
func Spawn(s *Spec, flags uintptr, stdio [4]int, tree int) (pid, pidfd int, done func(), err error) {
	if !CanSpawn() || s.KernelsRoot == "" {
		return 0, -1, nil, ErrNoSpawn
	}
	host, err := readMounts()
	if err != nil {
		return 0, -1, nil, err
	}
	// The sandbox's view once the kernels' root went, as the helper
	// reads it.
	n := len(host)
	host = slices.DeleteFunc(host, func(m mount) bool { return under(m.point, []string{s.KernelsRoot}) })
	if len(host) < n {
		// The kernels' root came back into the server's namespace (it
		// was mounted again on the host): it goes again.
		dropKernelsRoot(s.KernelsRoot)
	}
	b := newBuilder()
	// The kernel's cgroups are joined by the execution alone, in its
	// vfork before it executes (xb): the init shares the caller's memory,
	// and in the kernel's memory cgroup an out-of-memory kill there would
	// choose it and kill the caller with it (the kernel's OOM killer
	// passes a vfork child over). Their files are opened here, in the
	// caller's namespace (a file open for writing on the sandbox's copy of
	// their mount would keep it from being made read-only), and the init
	// inherits them; the cgroup view is the execution's namespace, made
	// once it joined.
	xb := newBuilder()
	joins, err := xb.join(s.Cgroups, false)
	if err != nil {
		return 0, -1, nil, err
	}
	for _, fd := range joins {
		defer syscall.Close(fd)
	}
	if err := xb.cgroupView(host, s.Cgroups); err != nil {
		return 0, -1, nil, err
	}
	// A descriptor the init moves to 0-3 must not be one it moves
	// another onto, nor one it keeps: each is put above 3 first.
	var dups []int
	defer func() {
		for _, fd := range dups {
			syscall.Close(fd)
		}
	}()
	lift := func(fd int) (int, error) {
		if fd >= 4 {
			return fd, nil
		}
		dup, err := above3(fd)
		if err == nil {
			dups = append(dups, dup)
		}
		return dup, err
	}
	if tree >= 0 {
		if tree, err = lift(tree); err != nil {
			return 0, -1, nil, fmt.Errorf("work dir: %w", err)
		}
	}
	if err := b.prologue(s, tree); err != nil {
		return 0, -1, nil, err
	}
	b.leave(s, host)
	b.readOnly(host, keepWritable(s))
	if err := b.finish(s, host, true, -1, false); err != nil {
		return 0, -1, nil, err
	}
	x := &launch{flags: flags | syscall.CLONE_VM | uintptr(syscall.SIGCHLD), uid: uintptr(s.UID), exec: xb.p}
	for _, str := range append(append(slices.Clip(s.Argv), s.Fallback...), s.Env...) {
		if strings.IndexByte(str, 0) >= 0 {
			return 0, -1, nil, fmt.Errorf("start %s: %w", s.Argv[0], syscall.EINVAL)
		}
	}
	x.dir = b.str(WorkDir)
	x.argv0, x.argv = b.str(s.Argv[0]), b.strv(s.Argv)
	if len(s.Fallback) > 0 {
		x.fallback0, x.fallback = b.str(s.Fallback[0]), b.strv(s.Fallback)
	}
	x.env = b.strv(s.Env)
	x.startMsg = "start " + s.Argv[0]
	for i, fd := range stdio {
		if fd, err = lift(fd); err != nil {
			return 0, -1, nil, fmt.Errorf("stdio: %w", err)
		}
		x.stdio[i] = uintptr(fd)
	}
	// The init has a copy of the caller's descriptors: it keeps only
	// these, so that it holds nothing of the caller's for as long as the
	// execution runs.
	keep := slices.Clone(x.stdio[:])
	for _, fd := range joins {
		keep = append(keep, uintptr(fd))
	}
	if tree >= 0 {
		keep = append(keep, uintptr(tree))
	}
	slices.Sort(keep)
	from := uintptr(3)
	for _, fd := range keep {
		if fd > from {
			x.closeRanges = append(x.closeRanges, [2]uintptr{from, fd - 1})
		}
		from = max(from, fd+1)
	}
	x.closeRanges = append(x.closeRanges, [2]uintptr{from, uintptr(^uint32(0))})
	return spawn(b.p, x)
}

// ErrNoSpawn says that Spawn cannot start an execution here: its helper
// must.
var ErrNoSpawn = errors.New("sandbox: no start without the helper here")

// CanSpawn reports whether Spawn works on this machine: an architecture
// it has the clone for (amd64; arm64's is not written yet), and the
// kernel's open_tree (Linux 5.2) and mount_setattr (5.12), which its
// set-up takes for granted where the helper does without them.
func CanSpawn() bool {
	canSpawnOnce()
	return canSpawn
}

var (
	canSpawn     bool
	canSpawnOnce = sync.OnceFunc(func() {
		if !vforkSupported || os.Getenv(NoSpawnEnv) != "" {
			return
		}
		// A bad descriptor, where the calls exist.
		_, _, e1 := syscall.RawSyscall(unix.SYS_OPEN_TREE, noFD, 0, 0)
		_, _, e2 := syscall.RawSyscall6(unix.SYS_MOUNT_SETATTR, noFD, 0, 0, 0, 0, 0)
		canSpawn = e1 != syscall.ENOSYS && e2 != syscall.ENOSYS && e1 != syscall.EPERM && e2 != syscall.EPERM
	})
)

// NoSpawnEnv, set to anything in the agent's environment, makes every
// execution start through the helper, as before Spawn.
const NoSpawnEnv = "BAI_SANDBOX_HELPER"

// launch is what Spawn's child needs beyond its plan.
type launch struct {
	exec                *plan        // the execution's own set-up, in its vfork
	closeRanges         [][2]uintptr // the descriptors the init closes first
	flags               uintptr
	stdio               [4]uintptr
	uid                 uintptr
	dir                 uintptr
	argv0, argv, env    uintptr
	fallback0, fallback uintptr
	startMsg            string
	dfl                 [4]uint64 // a sigaction of SIG_DFL; its last word an empty signal set
	ws                  uint32    // the execution's wait status
	buf                 [12]byte  // its exit code, in decimal
	pidfd               int32     // the init's, written by its clone
}

// strv is ss as a NULL-terminated array of NUL-terminated strings, in
// memory the plan keeps.
func (b *builder) strv(ss []string) uintptr {
	v := make([]uintptr, len(ss)+1)
	for i, s := range ss {
		v[i] = b.str(s)
	}
	b.p.keepv = append(b.p.keepv, v)
	return uintptr(unsafe.Pointer(&v[0]))
}

// errnoText are the errors' texts, for a child that cannot format one.
var errnoText [256]string

func init() {
	for i := range errnoText {
		errnoText[i] = syscall.Errno(i).Error()
	}
}

// childFail writes "bai: sandbox: MSG: ERROR" to standard error and
// exits with exitOnStart: the helper's report of a set-up that failed.
//
//go:nosplit
//go:norace
//go:nocheckptr
func childFail(msg string, e syscall.Errno) {
	childSay(msg, e)
	for {
		syscall.RawSyscall(syscall.SYS_EXIT, exitOnStart, 0, 0)
	}
}

// initFail is childFail in the init, once StatusFD is its: it reports
// exitOnStart there too, so that the agent tells a set-up that failed
// from an init that was killed.
//
//go:nosplit
//go:norace
//go:nocheckptr
func initFail(msg string, e syscall.Errno) {
	childSay(msg, e)
	const code = "127" // exitOnStart
	syscall.RawSyscall(syscall.SYS_WRITE, StatusFD, uintptr(unsafe.Pointer(unsafe.StringData(code))), uintptr(len(code)))
	for {
		syscall.RawSyscall(syscall.SYS_EXIT, exitOnStart, 0, 0)
	}
}

// childSay writes "bai: sandbox: MSG: ERROR" to standard error.
//
//go:nosplit
//go:norace
//go:nocheckptr
func childSay(msg string, e syscall.Errno) {
	childWrite("bai: sandbox: ")
	childWrite(msg)
	if e != syscall.EXDEV {
		childWrite(": ")
		if uintptr(e) < uintptr(len(errnoText)) {
			childWrite(errnoText[e])
		}
	}
	childWrite("\n")
}

//go:nosplit
//go:norace
//go:nocheckptr
func childWrite(s string) {
	syscall.RawSyscall(syscall.SYS_WRITE, 2, uintptr(unsafe.Pointer(unsafe.StringData(s))), uintptr(len(s)))
}
