package sandboxinit

import (
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// A plan is an execution's sandbox set-up as a list of system calls,
// decided ahead in Go (what to unmount, hide, mount and limit) and made by
// plan.run, which does nothing but raw system calls on memory the plan
// holds: no allocation, no stack growth, no runtime. So the same plan runs
// in the helper, and in the init the spawn server clones (Spawn), which
// has no runtime of its own.
type plan struct {
	steps []step
	regs  []uintptr    // file descriptors the steps open: regWork, regTree, then Spawn's joins
	stx   unix.Statx_t // the last stat
	attr  unix.MountAttr
	lim   syscall.Rlimit
	keep  [][]byte    // the NUL-terminated strings the steps point to
	keepv [][]uintptr // the arrays of them (Spawn's argv and env)
}

const (
	regWork = iota // the work directory, opened
	regTree        // a detached copy of its mount (open_tree)
)

type op uintptr

const (
	opWriteJoin  op = iota + 1 // write "0" (a[1]) to register a[0]: a cgroup's tasks or procs file
	opOpenDir                  // open the directory a[0] into register a[1]
	opCheckDev                 // the file of register a[0] is on device a[1]:a[2]; a[3] is ""
	opMount                    // mount(a[0], a[1], a[2], a[3], a[4])
	opUnmount                  // a lazy unmount of a[0]; one gone already is no error
	opOpenTree                 // open_tree(register a[0], clone) into register a[1]; a[2] is ""
	opSetattr                  // mount_setattr(a[0], a[1] at-flags, set a[2], clear a[3])
	opMkdir                    // mkdir(a[0], a[1])
	opMoveMount                // move_mount(register a[0] → a[1]); a[2] is ""
	opClose                    // close register a[0]
	opSymlink                  // symlink(a[0], a[1])
	opSkipUnless               // skip the next step unless a[0] stats (a[1]: statFollow, statDir or statNotDir)
	opUnshare                  // unshare(a[0])
	opHostname                 // sethostname(a[0], a[1])
	opRlimit                   // prlimit(self, a[0], a[1] as soft and hard)
	opNoNewPrivs               // PR_SET_NO_NEW_PRIVS
)

// opSkipUnless's kinds.
const (
	statFollow = iota // a[0] is there, through symbolic links
	statDir           // a[0] is a directory, not a link to one
	statNotDir        // a[0] is there (a link counts) and no directory
)

// Errors a step takes for success (step.ok).
const (
	okGone  = 1 << iota // ENOENT, EINVAL: not there (any more), or not a mount
	okNoSys             // ENOSYS: the kernel has not the call
)

type step struct {
	op    op
	a     [5]uintptr
	ok    uintptr // okGone, ...
	msg   string  // what failed, for the error: "mount /proc"
	trace string  // the traced step it is part of
}

// builder makes a plan.
type builder struct {
	p      *plan
	trace  string // the name of the steps added now
	opened bool   // regWork is opened by a step (prologue), and closed by finish
}

func newBuilder() *builder { return &builder{p: &plan{regs: []uintptr{noFD, noFD}}} }

// noFD is a register with no file descriptor.
const noFD = ^uintptr(0)

// str is s, NUL-terminated, in memory the plan keeps.
func (b *builder) str(s string) uintptr {
	buf := make([]byte, len(s)+1)
	copy(buf, s)
	b.p.keep = append(b.p.keep, buf)
	return uintptr(unsafe.Pointer(&buf[0]))
}

func (b *builder) add(o op, ok uintptr, msg string, a ...uintptr) {
	s := step{op: o, ok: ok, msg: msg, trace: b.trace}
	copy(s.a[:], a)
	b.p.steps = append(b.p.steps, s)
}

func (b *builder) mount(msg, source, target, fstype string, flags uintptr, data string) {
	var d uintptr
	if data != "" {
		d = b.str(data)
	}
	b.add(opMount, 0, msg, b.str(source), b.str(target), b.str(fstype), flags, d)
}

func (b *builder) unmount(target string) {
	b.add(opUnmount, okGone, "unmount "+target, b.str(target))
}

// join opens the kernel's cgroup files (Spec.Cgroups) to write to, each
// a register of the plan, and adds the steps that join them: "0" written
// to each by the process (a v1 tasks file: the thread) that makes them.
// Where closed, the steps close them next: the helper's files are on its
// own namespace's mounts, which a file open for writing would keep from
// being made read-only. Else they are the caller's to close (Spawn: the
// init has copies). Each is above 3: Spawn's init moves stdio onto 0-3.
func (b *builder) join(files []string, closed bool) ([]int, error) {
	b.trace = "cgroups"
	var fds []int
	for _, f := range files {
		fd, err := syscall.Open(f, syscall.O_WRONLY|syscall.O_CLOEXEC, 0)
		if err == nil && fd < 4 {
			low := fd
			fd, err = above3(low)
			syscall.Close(low)
		}
		if err != nil {
			for _, fd := range fds {
				syscall.Close(fd)
			}
			return nil, fmt.Errorf("join cgroup %s: %w", f, err)
		}
		fds = append(fds, fd)
		b.p.regs = append(b.p.regs, uintptr(fd))
		b.add(opWriteJoin, 0, "join cgroup "+f, uintptr(len(b.p.regs)-1), b.str("0"))
		if closed {
			b.add(opClose, 0, "join cgroup "+f, uintptr(len(b.p.regs)-1))
		}
	}
	return fds, nil
}

// above3 is a new descriptor of fd's file, above 3, closed on exec.
func above3(fd int) (int, error) {
	return unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 4)
}

// prologue is the set-up up to the host's mounts: every mount made
// private and, with Spec.KernelsRoot, the kernels' root with every kernel
// under it let go, its work directory's mount copied first (regTree;
// noFD where open_tree failed). Where tree is not -1, that copy came made
// already (a detached mount: the spawn server's namespace has no kernel's
// mount to copy it from, serverNS); else the work directory is opened
// here (and checked to be on Spec.WorkDirDev where that is not 0).
func (b *builder) prologue(s *Spec, tree int) error {
	if len(s.Argv) == 0 {
		return errors.New("no command")
	}
	if s.KernelsRoot != "" && (!under(s.KernelsRoot, s.Hide) || !under(s.WorkDir, []string{s.KernelsRoot})) {
		return errors.New("kernels root: not under the hidden directories, or not the work dir's")
	}
	b.trace = "private"
	if tree >= 0 {
		b.p.regs[regTree] = uintptr(tree)
	} else {
		b.opened = true
		b.add(opOpenDir, 0, "open work dir", b.str(s.WorkDir), regWork)
		if s.WorkDirDev != 0 {
			b.add(opCheckDev, 0, "work dir: not the kernel's mount", regWork,
				uintptr(unix.Major(s.WorkDirDev)), uintptr(unix.Minor(s.WorkDirDev)), b.str(""))
		}
	}
	b.add(opMount, 0, "make mounts private", b.str(""), b.str("/"), b.str(""), syscall.MS_REC|syscall.MS_PRIVATE, 0)
	if s.KernelsRoot != "" {
		b.trace = "kernels"
		if tree < 0 {
			b.add(opOpenTree, 0, "copy the work dir's mount", regWork, regTree, b.str(""))
		}
		b.unmount(s.KernelsRoot)
	}
	return nil
}

// shadowed are the directories a sandbox mounts its own over: the host's
// mounts under them would only show in mountinfo.
var shadowed = []string{"/home", "/tmp", "/var/tmp", "/dev/shm"}

// leave is the set-up's first part on the host's mounts (as the
// sandbox's namespace has them after the prologue): the host mounts under
// the directories replaced below go, but for those that hold a hidden
// directory (covered below), and so do other agents' kernels on this host
// (their state elsewhere than under this agent's hidden directories),
// known by their mounts' source: their work dirs would name them in
// mountinfo. An agent's kernels' root goes first (parents come first),
// with every kernel under it.
func (b *builder) leave(s *Spec, host []mount) {
	b.trace = "unmount-shadowed"
	for i := len(host) - 1; i >= 0; i-- {
		if m := host[i]; under(m.point, shadowed) && !under(m.point, s.Hide) && !holds(m.point, s.Hide) {
			b.unmount(m.point)
		}
	}
	for _, m := range host {
		if (m.source == KernelSource || m.source == KernelsRootSource) && !under(m.point, s.Hide) && !under(m.point, shadowed) {
			b.unmount(m.point)
		}
	}
}

// keepWritable says which host mounts stay writable in a sandbox:
// ptys are allocated, not written; the others go or are covered.
func keepWritable(s *Spec) func(mount) bool {
	return func(m mount) bool {
		return m.fstype == "devpts" || under(m.point, s.Hide) || under(m.point, shadowed)
	}
}

// readOnly is the function readOnly's one mount_setattr(2) over the
// whole tree, and the mounts keep says to leave writable made writable
// again.
func (b *builder) readOnly(host []mount, keep func(mount) bool) {
	b.trace = "remount-ro"
	b.add(opSetattr, 0, "make mounts read-only", b.str("/"), unix.AT_RECURSIVE, unix.MOUNT_ATTR_RDONLY, 0)
	for _, m := range host {
		if m.fstype == "devpts" && keep(m) { // only the writable ones that stay need it back
			b.add(opSetattr, okGone, "keep "+m.point+" writable", b.str(m.point), 0, 0, unix.MOUNT_ATTR_RDONLY)
		}
	}
}

// finish is the rest of the set-up, once the host's mounts are
// read-only: /proc, /home with the work directory (its mount's copy where
// tree, else bound through workFD), the links of Spec.Bin, every mount
// under the hidden directories let go and those hidden, the cgroup view
// where view, the private temporary directories, the host name and the
// limits.
func (b *builder) finish(s *Spec, host []mount, tree bool, workFD int, view bool) error {
	// The namespace's init is root's, and hidden: no process of another
	// uid shows in /proc (where the init is the spawn server's clone,
	// Spawn, its command line would be the server's).
	b.trace = "proc"
	b.mount("mount /proc", "proc", "/proc", "proc", syscall.MS_NOSUID|syscall.MS_NODEV|syscall.MS_NOEXEC, "hidepid=2")
	b.trace = "home-workdir-bin"
	b.mount("mount /home", "tmpfs", "/home", "tmpfs", syscall.MS_NOSUID|syscall.MS_NODEV, "size=64k,mode=0755")
	b.add(opMkdir, 0, "make "+WorkDir, b.str(WorkDir), 0o755)
	if tree {
		b.add(opMoveMount, 0, "mount work dir", regTree, b.str(WorkDir), b.str(""))
		b.add(opClose, 0, "close", regTree)
	} else {
		b.mount("mount work dir", "/proc/self/fd/"+strconv.Itoa(workFD), WorkDir, "", syscall.MS_BIND, "")
		// A bind takes the flags of the mount it copies, which readOnly
		// may have made read-only with the rest; without mount_setattr,
		// the remounts' way left the kernels' mounts writable.
		b.add(opSetattr, okNoSys, "mount work dir", b.str(WorkDir), 0, 0, unix.MOUNT_ATTR_RDONLY)
	}
	if b.opened {
		b.add(opClose, 0, "close", regWork)
	}
	if err := b.bin(s.Bin); err != nil {
		return err
	}
	// The mounts under the hidden directories (every kernel's work
	// directory, this one's included: it is at WorkDir now) leave this
	// namespace, so that /proc/self/mountinfo names no other kernel.
	b.trace = "unmount-hidden"
	for _, p := range subtreeTops(host, s.Hide) {
		b.unmount(p)
	}
	b.trace = "hide"
	for _, d := range s.Hide {
		b.add(opSkipUnless, 0, "", b.str(d), statFollow) // under a directory hidden already
		b.mount("hide "+d, "tmpfs", d, "tmpfs", syscall.MS_NOSUID|syscall.MS_NODEV|syscall.MS_NOEXEC|syscall.MS_RDONLY, "size=4k,mode=0700")
	}
	for _, f := range s.HideFiles {
		b.add(opSkipUnless, 0, "", b.str(f), statNotDir) // absent, or under a directory hidden already
		b.mount("hide "+f, "/dev/null", f, "", syscall.MS_BIND, "")
	}
	if view {
		if err := b.cgroupView(host, s.Cgroups); err != nil {
			return err
		}
	}
	// Private temporary directories, each a tmpfs of its own: gone with
	// the execution, bounded in size, and their pages charged to the
	// kernel's memory cgroup (the writer's).
	b.trace = "tmpfs"
	for _, t := range []struct {
		dir   string
		size  int64
		flags uintptr
	}{
		{"/tmp", s.TmpSize, 0},
		{"/var/tmp", s.TmpSize, 0},
		{"/dev/shm", s.ShmSize, syscall.MS_NOEXEC},
	} {
		opts := "mode=1777"
		if t.size > 0 {
			opts += ",size=" + strconv.FormatInt(t.size, 10)
		}
		b.add(opSkipUnless, 0, "", b.str(t.dir), statDir) // absent or a symlink (/var/tmp -> /tmp): read-only above
		b.mount("mount "+t.dir, "tmpfs", t.dir, "tmpfs", syscall.MS_NOSUID|syscall.MS_NODEV|t.flags, opts)
	}
	b.trace = "hostname-rlimits-nnp"
	if s.Hostname != "" {
		b.add(opHostname, 0, "set host name", b.str(s.Hostname), uintptr(len(s.Hostname)))
	}
	for _, r := range []struct {
		res int
		v   uint64
	}{{syscall.RLIMIT_CORE, 0}, {syscall.RLIMIT_NOFILE, s.NoFile}, {syscall.RLIMIT_FSIZE, s.FSize}} {
		if r.v == 0 && r.res != syscall.RLIMIT_CORE {
			continue
		}
		b.add(opRlimit, 0, "rlimit "+strconv.Itoa(r.res), uintptr(r.res), uintptr(r.v))
	}
	// No setuid binary gives root back.
	b.add(opNoNewPrivs, 0, "no_new_privs")
	return nil
}

// bin makes BinDir with the links of bin.
func (b *builder) bin(bin map[string]string) error {
	if len(bin) == 0 {
		return nil
	}
	for _, d := range []string{BinDir[:len(BinDir)-len("/bin")], BinDir} {
		b.add(opMkdir, 0, "make "+BinDir, b.str(d), 0o755)
	}
	for name, target := range bin {
		if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\x00") {
			return fmt.Errorf("bad command name %q", name)
		}
		if strings.IndexByte(target, 0) >= 0 {
			return fmt.Errorf("bad link target %q", target)
		}
		b.add(opSymlink, 0, "make "+BinDir, b.str(target), b.str(BinDir+"/"+name))
	}
	return nil
}

// cgroupView gives the execution a cgroup namespace rooted at its
// kernel's cgroups, and mounts each hierarchy the kernel is in (v2's
// unified one, or v1's memory, pids and cpu: those of its join files,
// Spec.Cgroups) anew over the host's, read-only: it shows the kernel's own
// cgroup as its root, as a container sees its cgroups. Listing
// /sys/fs/cgroup no longer names the agent's other kernels, and the
// kernel reads its own limits and usage at the usual paths
// (/sys/fs/cgroup/memory.max, /sys/fs/cgroup/memory/memory.limit_in_bytes),
// where /proc/self/cgroup now says "/". The process that makes it joined
// the kernel's cgroups (v1: its thread that forks the execution) before:
// the namespace is rooted where it is then.
func (b *builder) cgroupView(host []mount, joined []string) error {
	var view []mount
	for _, f := range joined {
		dir := filepath.Dir(f)
		m, ok := cgroupMount(host, dir)
		if !ok {
			// Through a symbolic link (v1's cpu -> cpu,cpuacct):
			// mountinfo has the hierarchy's mount at the link's target.
			real, err := filepath.EvalSymlinks(dir)
			if err != nil {
				return fmt.Errorf("cgroup view: %w", err)
			}
			if m, ok = cgroupMount(host, real); !ok {
				return fmt.Errorf("cgroup view: %s is not on a cgroup mount", dir)
			}
		}
		if !slices.ContainsFunc(view, func(v mount) bool { return v.point == m.point }) {
			view = append(view, m)
		}
	}
	if len(view) == 0 {
		return nil
	}
	b.trace = "cgroup-view"
	b.add(opUnshare, 0, "cgroup view: new cgroup namespace", unix.CLONE_NEWCGROUP)
	for _, m := range view {
		// A v1 hierarchy is named by its controllers (and name=), with
		// the flags the host mounted it with (others only make the kernel
		// warn), but its release agent: that is the host's, and not for
		// an execution's mount to name. v2 has one hierarchy.
		var opts []string
		if m.fstype == "cgroup" {
			for _, o := range strings.Split(m.super, ",") {
				if o != "rw" && o != "ro" && !strings.HasPrefix(o, "release_agent=") {
					opts = append(opts, o)
				}
			}
		}
		// The host's mount goes first: the kernel refuses a file system
		// mounted on its own root. Read-only as a mount, not as a file
		// system: the host's is read-write, and a new mount of it must
		// say the same.
		const flags = syscall.MS_NOSUID | syscall.MS_NODEV | syscall.MS_NOEXEC
		b.add(opUnmount, okGone, "cgroup view: unmount "+m.point, b.str(m.point))
		b.mount("cgroup view: mount "+m.point, "cgroup", m.point, m.fstype, flags, strings.Join(opts, ","))
		b.mount("cgroup view: "+m.point+" read-only", "", m.point, "", syscall.MS_REMOUNT|syscall.MS_BIND|syscall.MS_RDONLY|flags, "")
	}
	// The hierarchies the kernel is not in (v1's blkio, devices, freezer,
	// name=systemd, a hybrid host's unified one without controllers) would
	// show the host's cgroup tree: its services' and containers' names.
	// They leave the namespace; their directories stay, empty.
	for _, m := range host {
		if (m.fstype == "cgroup" || m.fstype == "cgroup2") && !slices.ContainsFunc(view, func(v mount) bool { return v.point == m.point }) {
			b.add(opUnmount, okGone, "cgroup view: unmount the host's "+m.point, b.str(m.point))
		}
	}
	return nil
}

// run makes the steps from up to to in the calling thread, and says
// which failed, with its error; -1 where none did. Only raw system calls,
// on memory the plan holds: it runs in a child between clone and execve.
//
//go:nosplit
//go:norace
//go:nocheckptr
func (p *plan) run(from, to int) (failed int, errno syscall.Errno) {
	var (
		i    int
		s    *step
		r    uintptr
		e    syscall.Errno
		skip bool
	)
	for i = from; i < to; i++ {
		s = &p.steps[i]
		switch s.op {
		case opWriteJoin:
			_, _, e = syscall.RawSyscall(syscall.SYS_WRITE, p.regs[s.a[0]], s.a[1], 1)
		case opOpenDir:
			r, _, e = syscall.RawSyscall6(syscall.SYS_OPENAT, atFDCWD, s.a[0], syscall.O_RDONLY|syscall.O_DIRECTORY|syscall.O_CLOEXEC, 0, 0, 0)
			p.regs[s.a[1]] = r
		case opCheckDev:
			_, _, e = syscall.RawSyscall6(unix.SYS_STATX, p.regs[s.a[0]], s.a[3], unix.AT_EMPTY_PATH, unix.STATX_TYPE, uintptr(unsafe.Pointer(&p.stx)), 0)
			if e == 0 && (uintptr(p.stx.Dev_major) != s.a[1] || uintptr(p.stx.Dev_minor) != s.a[2]) {
				e = syscall.EXDEV
			}
		case opMount:
			_, _, e = syscall.RawSyscall6(syscall.SYS_MOUNT, s.a[0], s.a[1], s.a[2], s.a[3], s.a[4], 0)
		case opUnmount:
			_, _, e = syscall.RawSyscall(syscall.SYS_UMOUNT2, s.a[0], syscall.MNT_DETACH, 0)
		case opOpenTree:
			r, _, e = syscall.RawSyscall(unix.SYS_OPEN_TREE, p.regs[s.a[0]], s.a[2], unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC|unix.AT_EMPTY_PATH)
			if e != 0 {
				// Without open_tree (before Linux 5.2, or refused), the
				// kernels' root stays (the next step), and the kernels'
				// mounts go with the others under Hide.
				r, e = noFD, 0
				i++
			}
			p.regs[s.a[1]] = r
		case opSetattr:
			p.attr = unix.MountAttr{Attr_set: uint64(s.a[2]), Attr_clr: uint64(s.a[3])}
			_, _, e = syscall.RawSyscall6(unix.SYS_MOUNT_SETATTR, atFDCWD, s.a[0], s.a[1], uintptr(unsafe.Pointer(&p.attr)), unsafe.Sizeof(p.attr), 0)
		case opMkdir:
			_, _, e = syscall.RawSyscall(syscall.SYS_MKDIRAT, atFDCWD, s.a[0], s.a[1])
		case opMoveMount:
			_, _, e = syscall.RawSyscall6(unix.SYS_MOVE_MOUNT, p.regs[s.a[0]], s.a[2], atFDCWD, s.a[1], unix.MOVE_MOUNT_F_EMPTY_PATH, 0)
		case opClose:
			_, _, e = syscall.RawSyscall(syscall.SYS_CLOSE, p.regs[s.a[0]], 0, 0)
		case opSymlink:
			_, _, e = syscall.RawSyscall(syscall.SYS_SYMLINKAT, s.a[0], atFDCWD, s.a[1])
		case opSkipUnless:
			r = unix.AT_SYMLINK_NOFOLLOW
			if s.a[1] == statFollow {
				r = 0
			}
			_, _, e = syscall.RawSyscall6(unix.SYS_STATX, atFDCWD, s.a[0], r, unix.STATX_TYPE, uintptr(unsafe.Pointer(&p.stx)), 0)
			skip = e != 0
			if !skip && s.a[1] != statFollow {
				skip = (s.a[1] == statDir) != (p.stx.Mode&syscall.S_IFMT == syscall.S_IFDIR)
			}
			if skip {
				i++ // the next step is not for this one
			}
			e = 0
		case opUnshare:
			_, _, e = syscall.RawSyscall(syscall.SYS_UNSHARE, s.a[0], 0, 0)
		case opHostname:
			_, _, e = syscall.RawSyscall(syscall.SYS_SETHOSTNAME, s.a[0], s.a[1], 0)
		case opRlimit:
			p.lim = syscall.Rlimit{Cur: uint64(s.a[1]), Max: uint64(s.a[1])}
			_, _, e = syscall.RawSyscall6(syscall.SYS_PRLIMIT64, 0, s.a[0], uintptr(unsafe.Pointer(&p.lim)), 0, 0, 0)
		case opNoNewPrivs:
			_, _, e = syscall.RawSyscall6(syscall.SYS_PRCTL, unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0, 0)
		}
		if e != 0 && !(s.ok&okGone != 0 && (e == syscall.ENOENT || e == syscall.EINVAL) ||
			s.ok&okNoSys != 0 && e == syscall.ENOSYS) {
			return i, e
		}
	}
	return -1, 0
}

// err is the error of step failed, failing with errno; nil where failed
// is -1.
func (p *plan) err(failed int, errno syscall.Errno) error {
	if failed < 0 {
		return nil
	}
	s := &p.steps[failed]
	if s.op == opCheckDev && errno == syscall.EXDEV {
		return errors.New(s.msg)
	}
	return fmt.Errorf("%s: %w", s.msg, errno)
}

// runTraced makes the steps from from on, in this process; where
// Spec.Trace asks for it, one by one, to time each traced step.
func (p *plan) runTraced(from int) error {
	if !trace.on {
		return p.err(p.run(from, len(p.steps)))
	}
	for i := from; i < len(p.steps); {
		n := 1
		if op := p.steps[i].op; op == opSkipUnless || op == opOpenTree {
			n = 2 // with the step it may skip
		}
		if err := p.err(p.run(i, i+n)); err != nil {
			return err
		}
		i += n
		if i == len(p.steps) || p.steps[i].trace != p.steps[i-1].trace {
			trace.step(p.steps[i-1].trace)
		}
	}
	return nil
}

// atFDCWD is AT_FDCWD (-100) as a system call's argument.
const atFDCWD = ^uintptr(99)
