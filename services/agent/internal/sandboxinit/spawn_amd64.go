package sandboxinit

import (
	"encoding/binary"
	"runtime"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

const vforkSupported = true

//go:linkname runtime_BeforeFork syscall.runtime_BeforeFork
func runtime_BeforeFork()

//go:linkname runtime_AfterFork syscall.runtime_AfterFork
func runtime_AfterFork()

// rawVfork is clone(flags), for flags with CLONE_VM|CLONE_VFORK
// (spawn_amd64.s).
func rawVfork(flags uintptr) (pid uintptr, errno uintptr)

// rawCloneOn is clone(flags) for flags with CLONE_VM, not CLONE_VFORK:
// the child calls fn(p, x) on stack, where those three words are; with
// CLONE_PIDFD its pidfd is written at ptid (spawn_amd64.s).
func rawCloneOn(flags, stack, ptid uintptr) (pid uintptr, errno uintptr)

// pid1Entry is pid1's entry for the register ABI (a func value's code
// pointer): called from assembly it would go through a wrapper, which a
// race-detecting build instruments.
var pid1Entry = func() uintptr {
	f := pid1
	return **(**uintptr)(unsafe.Pointer(&f))
}()

// stackSize is the size of the init's stack: it runs nosplit code only,
// which the linker holds to well under a page.
const stackSize = 64 << 10

// spawn clones the sandbox's init, which makes p and starts x: a process
// of its own in this process's memory, on a stack of its own, that this
// process does not wait for, and a pidfd of it (made by the clone: the
// init may be gone, and reaped, by the time clone returns). done must be
// called once the init was reaped: its stack goes, and p and x may.
func spawn(p *plan, x *launch) (pid, pidfd int, done func(), err error) {
	stack, err := unix.Mmap(-1, 0, stackSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_STACK)
	if err != nil {
		return 0, -1, nil, err
	}
	// The three words at the top, with 64 bytes above them.
	off := stackSize - 128
	for i, w := range []uintptr{uintptr(unsafe.Pointer(p)), uintptr(unsafe.Pointer(x)), pid1Entry} {
		binary.NativeEndian.PutUint64(stack[off+8*i:], uint64(w))
	}
	// The init starts with every signal blocked (runtime_BeforeFork
	// blocks them on this thread), and keeps them so.
	runtime_BeforeFork()
	r, errno := rawCloneOn(x.flags|unix.CLONE_PIDFD, uintptr(unsafe.Pointer(&stack[off])), uintptr(unsafe.Pointer(&x.pidfd)))
	runtime_AfterFork()
	if errno != 0 {
		unix.Munmap(stack)
		return 0, -1, nil, syscall.Errno(errno)
	}
	return int(r), int(x.pidfd), func() {
		unix.Munmap(stack)
		runtime.KeepAlive(p)
		runtime.KeepAlive(x)
	}, nil
}

// pid1 is the sandbox's init, as the helper is where there is one: it
// makes the set-up, starts the execution and reaps every process of the
// namespace until the execution ends, then kills what it left, reports
// its exit code on sandboxinit.StatusFD and exits with it. It shares the
// spawn server's memory (the plan's, which the server keeps until it
// reaped the init) but not its signal handlers: those it first resets, so
// that no handler of the server's runtime ever runs here.
//
//go:nosplit
//go:norace
//go:nocheckptr
func pid1(p *plan, x *launch) {
	var (
		i      uintptr
		failed int
		e      syscall.Errno
		pid, r uintptr
		code   uintptr
	)
	for i = 1; i < 65; i++ {
		syscall.RawSyscall6(syscall.SYS_RT_SIGACTION, i, uintptr(unsafe.Pointer(&x.dfl)), 0, 8, 0, 0)
	}
	syscall.RawSyscall(syscall.SYS_SETPGID, 0, 0, 0)
	for i = 0; i < uintptr(len(x.closeRanges)); i++ {
		if _, _, e = syscall.RawSyscall(unix.SYS_CLOSE_RANGE, x.closeRanges[i][0], x.closeRanges[i][1], 0); e != 0 {
			childFail("close the server's files", e)
		}
	}
	for i = 0; i < 4; i++ {
		r = 0
		if i == StatusFD {
			r = syscall.O_CLOEXEC // the init's, not the execution's
		}
		if _, _, e = syscall.RawSyscall(syscall.SYS_DUP3, x.stdio[i], i, r); e != 0 {
			childFail("stdio", e)
		}
	}
	for i = 0; i < 4; i++ {
		syscall.RawSyscall(syscall.SYS_CLOSE, x.stdio[i], 0, 0) // above 3 (Spawn)
	}
	if failed, e = p.run(0, len(p.steps)); failed >= 0 {
		initFail(p.steps[failed].msg, e)
	}
	if pid, e = startExecution(x); e != 0 {
		initFail(x.startMsg, e)
	}
	for {
		r, _, e = syscall.RawSyscall6(syscall.SYS_WAIT4, ^uintptr(0), uintptr(unsafe.Pointer(&x.ws)), 0, 0, 0, 0)
		if e == syscall.EINTR || e == 0 && r != pid {
			continue
		}
		break
	}
	code = exitOnStart
	if e == 0 {
		code = uintptr(x.ws>>8) & 0xff
		if x.ws&0x7f != 0 {
			code = 128 + uintptr(x.ws)&0x7f // killed by that signal
		}
	}
	// The init of a PID namespace kills every process of it with
	// kill(-1): none can fork past it.
	syscall.RawSyscall(syscall.SYS_KILL, ^uintptr(0), uintptr(syscall.SIGKILL), 0)
	for {
		if _, _, e = syscall.RawSyscall6(syscall.SYS_WAIT4, ^uintptr(0), 0, 0, 0, 0, 0); e != 0 && e != syscall.EINTR {
			break // ECHILD: none left
		}
	}
	// The code, in decimal, before the exit: the exit of the namespace's
	// last process tears its mounts down, which waits for an RCU grace
	// period before the init can be reaped (see finish).
	i = uintptr(len(x.buf))
	r = code
	for {
		i--
		x.buf[i] = byte('0' + r%10)
		if r /= 10; r == 0 {
			break
		}
	}
	syscall.RawSyscall(syscall.SYS_WRITE, StatusFD, uintptr(unsafe.Pointer(&x.buf[i])), uintptr(len(x.buf))-i)
	for i = 0; i <= StatusFD; i++ {
		syscall.RawSyscall(syscall.SYS_CLOSE, i, 0, 0)
	}
	for {
		syscall.RawSyscall(syscall.SYS_EXIT, code, 0, 0)
	}
}

// startExecution is the execution's vfork and its life until it executes
// Argv: in the kernel's cgroups (and their view, x.exec), as the
// kernel's uid in the work directory, with its signals unblocked. The
// init waits meanwhile, and returns from this frame at once, which the
// child never does.
//
//go:noinline
//go:nosplit
//go:norace
//go:nocheckptr
func startExecution(x *launch) (pid uintptr, errno syscall.Errno) {
	var (
		e      syscall.Errno
		r      uintptr
		failed int
	)
	pid, r = rawVfork(syscall.CLONE_VM | syscall.CLONE_VFORK | uintptr(syscall.SIGCHLD))
	if pid != 0 || r != 0 {
		return pid, syscall.Errno(r)
	}
	if failed, e = x.exec.run(0, len(x.exec.steps)); failed >= 0 {
		childFail(x.exec.steps[failed].msg, e)
	}
	syscall.RawSyscall6(syscall.SYS_RT_SIGPROCMASK, unix.SIG_SETMASK, uintptr(unsafe.Pointer(&x.dfl[3])), 0, 8, 0, 0)
	if _, _, e = syscall.RawSyscall(syscall.SYS_SETGROUPS, 0, 0, 0); e == 0 {
		if _, _, e = syscall.RawSyscall(syscall.SYS_SETGID, x.uid, 0, 0); e == 0 {
			_, _, e = syscall.RawSyscall(syscall.SYS_SETUID, x.uid, 0, 0)
		}
	}
	if e != 0 {
		childFail("credentials", e)
	}
	if _, _, e = syscall.RawSyscall(syscall.SYS_CHDIR, x.dir, 0, 0); e != 0 {
		childFail("chdir", e)
	}
	_, _, e = syscall.RawSyscall(syscall.SYS_EXECVE, x.argv0, x.argv, x.env)
	if x.fallback0 != 0 {
		_, _, e = syscall.RawSyscall(syscall.SYS_EXECVE, x.fallback0, x.fallback, x.env)
	}
	childFail(x.startMsg, e)
	return 0, 0
}
