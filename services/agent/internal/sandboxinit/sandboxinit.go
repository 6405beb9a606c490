// Package sandboxinit is the process runtime's sandbox helper: the first
// process in a kernel execution's namespaces. It imports nothing beyond
// the standard library's basics, so that a binary made of it alone
// (cmd/bai-sandbox-init) starts in well under a millisecond, where the
// agent's own binary, re-executed, pays for its runtime and package
// initialisation on every execution.
package sandboxinit

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Env carries the helper's Spec, as JSON.
const Env = "_BAI_SANDBOX_INIT"

// WorkDir is where a sandboxed kernel sees its work directory.
const WorkDir = "/home/work"

// BinDir is where the helper makes the links of Spec.Bin: in the
// kernel's root-owned /home, so the kernel cannot change them.
const BinDir = "/home/.bai/bin"

// StatusFD is the helper's file descriptor where it writes the execution's
// exit code, as decimal digits, once nothing of it runs any more; EOF
// without it means the helper itself failed or was killed.
const StatusFD = 3

// SpecFD is where the helper reads its Spec, to EOF, where Env is
// SpecFromFD: a helper started ahead of its execution waits there. EOF
// with nothing read lets it exit.
const SpecFD = 4

// SpecFromFD as Env's value has the helper read its Spec from SpecFD.
const SpecFromFD = "fd"

// statusOK: StatusFD was open at start (and is kept from the execution).
var statusOK bool

// exitOnStart is the exit code of an execution that could not start.
const exitOnStart = 127

// Spec is what the helper sets up before it executes Argv.
type Spec struct {
	Argv []string `json:"argv"`
	// Fallback is run instead where Argv cannot be executed (no such
	// file, not executable, not a binary): the shell line that Argv's
	// words were read from, so that the shell runs it and says why as it
	// always would.
	Fallback []string `json:"fallback,omitempty"`
	Env      []string `json:"env"`
	WorkDir  string   `json:"work_dir"` // on the host
	// WorkDirDev is the device of WorkDir's mount as the agent sees it:
	// the helper refuses a work directory on another (a helper started
	// ahead whose namespace did not get the kernel's mount).
	WorkDirDev uint64   `json:"work_dir_dev,omitempty"`
	Hide       []string `json:"hide"` // host directories hidden under an empty tmpfs
	// KernelsRoot is a mount under Hide that holds every kernel's work
	// directory, WorkDir's among them: it leaves the namespace, with all
	// of them, before the host's mounts are read (WorkDir's mount kept as
	// a detached copy), so that an agent's thousand kernels cost an
	// execution one unmount, not a thousand lines of mountinfo to read and
	// act on. "": they go with the other mounts under Hide.
	KernelsRoot string `json:"kernels_root,omitempty"`
	// HideFiles are host files (device nodes: GPUs not given to the
	// kernel) over which /dev/null is bound.
	HideFiles []string `json:"hide_files,omitempty"`
	// Cgroups are the files to write "0" to, to join the kernel's cgroups:
	// v1 tasks files (this thread alone, the one that forks the execution)
	// or v2 cgroup.procs files.
	Cgroups  []string `json:"cgroups"`
	UID      int      `json:"uid"`
	Hostname string   `json:"hostname"`
	TmpSize  int64    `json:"tmp_size"` // each of /tmp and /var/tmp
	ShmSize  int64    `json:"shm_size"` // /dev/shm
	NoFile   uint64   `json:"nofile"`
	FSize    uint64   `json:"fsize"`
	// Bin are symbolic links made in BinDir: command name → target.
	Bin map[string]string `json:"bin,omitempty"`
	// Trace writes each set-up step's wall and CPU time to stderr (the
	// bench's runpath scenario); never set by the agent.
	Trace bool `json:"trace,omitempty"`
}

// tracer times the set-up's steps where Spec.Trace asks for it.
type tracer struct {
	on        bool
	wall, cpu int64
	steps     []string
}

// nowNS is monotonic nanoseconds since the helper's first trace step.
func nowNS() int64 { return int64(time.Since(traceBase)) }

var traceBase = time.Now()

func cpuNS() int64 {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return ru.Utime.Nano() + ru.Stime.Nano()
}

func (t *tracer) start() {
	if t.on {
		t.wall, t.cpu = nowNS(), cpuNS()
	}
}

// step records the time since the last step.
func (t *tracer) step(name string) {
	if !t.on {
		return
	}
	w, c := nowNS(), cpuNS()
	t.steps = append(t.steps, fmt.Sprintf("%s %d %d", name, (w-t.wall)/1000, (c-t.cpu)/1000))
	t.wall, t.cpu = w, c
}

// flush writes the steps to stderr: "bai-trace NAME WALL_US CPU_US".
func (t *tracer) flush() {
	for _, s := range t.steps {
		fmt.Fprintf(os.Stderr, "bai-trace %s\n", s)
	}
	t.steps = nil
}

var trace tracer

// Main returns at once where Env is unset. Else it is the helper: it sets
// the sandbox up, runs the execution and exits with its status; it never
// returns.
func Main() {
	data, ok := os.LookupEnv(Env)
	if !ok {
		return
	}
	runtime.LockOSThread()
	if _, err := unix.FcntlInt(StatusFD, unix.F_GETFD, 0); err == nil {
		syscall.CloseOnExec(StatusFD)
		statusOK = true
	}
	if data == SpecFromFD {
		f := os.NewFile(SpecFD, "spec")
		b, err := io.ReadAll(f)
		f.Close()
		if err == nil && len(b) == 0 {
			os.Exit(0) // let go unused
		}
		data = string(b)
	}
	var spec Spec
	err := json.Unmarshal([]byte(data), &spec)
	trace.on = spec.Trace
	trace.start()
	if err == nil {
		err = run(&spec)
	}
	// run only returns on failure.
	fmt.Fprintf(os.Stderr, "bai: sandbox: %v\n", err)
	os.Exit(exitOnStart)
}

func run(s *Spec) error {
	if len(s.Argv) == 0 {
		return errors.New("no command")
	}
	// This goroutine is locked to its thread (Main): a v1 tasks file moves
	// this thread, which forks the execution below.
	for _, f := range s.Cgroups {
		if err := os.WriteFile(f, []byte("0"), 0); err != nil {
			return fmt.Errorf("join cgroup: %w", err)
		}
	}
	trace.step("cgroups")
	work, err := syscall.Open(s.WorkDir, syscall.O_RDONLY|syscall.O_DIRECTORY|syscall.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open work dir: %w", err)
	}
	if s.WorkDirDev != 0 {
		var st syscall.Stat_t
		if err := syscall.Fstat(work, &st); err != nil {
			return fmt.Errorf("stat work dir: %w", err)
		}
		if st.Dev != s.WorkDirDev {
			return errors.New("work dir: not the kernel's mount")
		}
	}
	if err := syscall.Mount("", "/", "", syscall.MS_REC|syscall.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make mounts private: %w", err)
	}
	trace.step("private")
	tree := -1 // a detached copy of the work dir's mount
	if s.KernelsRoot != "" {
		if !under(s.KernelsRoot, s.Hide) || !under(s.WorkDir, []string{s.KernelsRoot}) {
			return errors.New("kernels root: not under the hidden directories, or not the work dir's")
		}
		// Without open_tree (before Linux 5.2, or refused), the kernels'
		// mounts go below, with the others under Hide.
		if tree, err = unix.OpenTree(work, "", unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC|unix.AT_EMPTY_PATH); err == nil {
			if err := unmount(s.KernelsRoot); err != nil {
				return err
			}
		}
	}
	trace.step("kernels")
	host, err := readMounts()
	if err != nil {
		return err
	}
	trace.step("readmounts")
	// Host mounts under the directories replaced below would only show in
	// mountinfo (another agent's kernels' work dirs under /tmp): they go,
	// but for those that hold a hidden directory (covered below).
	shadowed := []string{"/home", "/tmp", "/var/tmp", "/dev/shm"}
	for i := len(host) - 1; i >= 0; i-- {
		if m := host[i]; under(m.point, shadowed) && !under(m.point, s.Hide) && !holds(m.point, s.Hide) {
			if err := unmount(m.point); err != nil {
				return err
			}
		}
	}
	// Another agent's kernels on this host (its state elsewhere than
	// under this agent's hidden directories): their work dirs would name
	// them in mountinfo. They are known by their source; its kernels'
	// root goes first (parents come first), with every kernel under it.
	for _, m := range host {
		if (m.source == KernelSource || m.source == KernelsRootSource) && !under(m.point, s.Hide) && !under(m.point, shadowed) {
			if err := unmount(m.point); err != nil {
				return err
			}
		}
	}
	trace.step("unmount-shadowed")
	// Every other host mount read-only in here: a kernel writes only its
	// work directory and its private temporary directories below, never
	// a directory of the host that other kernels share (/var/tmp,
	// /dev/shm, /var/crash, ...). The mounts under the hidden directories
	// (every kernel's work directory) go instead, below.
	if err := readOnly(host, func(m mount) bool {
		// Ptys are allocated, not written; the others go or are covered.
		return m.fstype == "devpts" || under(m.point, s.Hide) || under(m.point, shadowed)
	}); err != nil {
		return err
	}
	trace.step("remount-ro")
	if err := syscall.Mount("proc", "/proc", "proc", syscall.MS_NOSUID|syscall.MS_NODEV|syscall.MS_NOEXEC, ""); err != nil {
		return fmt.Errorf("mount /proc: %w", err)
	}
	trace.step("proc")
	if err := syscall.Mount("tmpfs", "/home", "tmpfs", syscall.MS_NOSUID|syscall.MS_NODEV, "size=64k,mode=0755"); err != nil {
		return fmt.Errorf("mount /home: %w", err)
	}
	if err := os.Mkdir(WorkDir, 0o755); err != nil {
		return err
	}
	if tree >= 0 {
		err = unix.MoveMount(tree, "", unix.AT_FDCWD, WorkDir, unix.MOVE_MOUNT_F_EMPTY_PATH)
		syscall.Close(tree)
	} else {
		err = syscall.Mount("/proc/self/fd/"+strconv.Itoa(work), WorkDir, "", syscall.MS_BIND, "")
		if err == nil {
			// A bind takes the flags of the mount it copies, which
			// readOnly may have made read-only with the rest.
			err = unix.MountSetattr(unix.AT_FDCWD, WorkDir, 0, &unix.MountAttr{Attr_clr: unix.MOUNT_ATTR_RDONLY})
			if err == syscall.ENOSYS {
				err = nil // the remounts' way: the kernels' mounts were left writable
			}
		}
	}
	if err != nil {
		return fmt.Errorf("mount work dir: %w", err)
	}
	syscall.Close(work)
	if err := makeBin(s.Bin); err != nil {
		return err
	}
	trace.step("home-workdir-bin")
	// The mounts under the hidden directories (every kernel's work
	// directory, this one's included: it is at WorkDir now) leave this
	// namespace, so that /proc/self/mountinfo names no other kernel.
	for _, p := range subtreeTops(host, s.Hide) {
		if err := unmount(p); err != nil {
			return err
		}
	}
	trace.step("unmount-hidden")
	for _, d := range s.Hide {
		if _, err := os.Stat(d); err != nil {
			continue // under a directory hidden already
		}
		if err := syscall.Mount("tmpfs", d, "tmpfs", syscall.MS_NOSUID|syscall.MS_NODEV|syscall.MS_NOEXEC|syscall.MS_RDONLY, "size=4k,mode=0700"); err != nil {
			return fmt.Errorf("hide %s: %w", d, err)
		}
	}
	for _, f := range s.HideFiles {
		if fi, err := os.Lstat(f); err != nil || fi.IsDir() {
			continue // absent, or under a directory hidden already
		}
		if err := syscall.Mount("/dev/null", f, "", syscall.MS_BIND, ""); err != nil {
			return fmt.Errorf("hide %s: %w", f, err)
		}
	}
	trace.step("hide")
	if err := cgroupView(host, s.Cgroups); err != nil {
		return err
	}
	trace.step("cgroup-view")
	// Private temporary directories, each a tmpfs of its own: gone with
	// the execution, bounded in size, and their pages charged to the
	// kernel's memory cgroup (the writer's).
	for _, t := range []struct {
		dir   string
		size  int64
		flags uintptr
	}{
		{"/tmp", s.TmpSize, 0},
		{"/var/tmp", s.TmpSize, 0},
		{"/dev/shm", s.ShmSize, syscall.MS_NOEXEC},
	} {
		if fi, err := os.Lstat(t.dir); err != nil || !fi.IsDir() {
			continue // absent or a symlink (/var/tmp -> /tmp): read-only above
		}
		opts := "mode=1777"
		if t.size > 0 {
			opts += ",size=" + strconv.FormatInt(t.size, 10)
		}
		if err := syscall.Mount("tmpfs", t.dir, "tmpfs", syscall.MS_NOSUID|syscall.MS_NODEV|t.flags, opts); err != nil {
			return fmt.Errorf("mount %s: %w", t.dir, err)
		}
	}
	trace.step("tmpfs")
	if s.Hostname != "" {
		if err := syscall.Sethostname([]byte(s.Hostname)); err != nil {
			return fmt.Errorf("set host name: %w", err)
		}
	}
	rl := []struct {
		res int
		v   uint64
	}{{syscall.RLIMIT_CORE, 0}, {syscall.RLIMIT_NOFILE, s.NoFile}, {syscall.RLIMIT_FSIZE, s.FSize}}
	for _, r := range rl {
		if r.v == 0 && r.res != syscall.RLIMIT_CORE {
			continue
		}
		if err := syscall.Setrlimit(r.res, &syscall.Rlimit{Cur: r.v, Max: r.v}); err != nil {
			return fmt.Errorf("rlimit %d: %w", r.res, err)
		}
	}
	// PR_SET_NO_NEW_PRIVS, on this locked thread, which forks the
	// execution: no setuid binary gives root back.
	if _, _, e := syscall.RawSyscall6(syscall.SYS_PRCTL, 38, 1, 0, 0, 0, 0); e != 0 {
		return fmt.Errorf("no_new_privs: %w", e)
	}
	trace.step("hostname-rlimits-nnp")
	uid := uint32(s.UID)
	attr := &syscall.ProcAttr{
		Dir:   WorkDir,
		Env:   s.Env,
		Files: []uintptr{0, 1, 2},
		Sys:   &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: uid, Groups: []uint32{}}},
	}
	pid, err := syscall.ForkExec(s.Argv[0], s.Argv, attr)
	if err != nil && len(s.Fallback) > 0 {
		pid, err = syscall.ForkExec(s.Fallback[0], s.Fallback, attr)
	}
	if err != nil {
		return fmt.Errorf("start %s: %w", s.Argv[0], err)
	}
	trace.step("forkexec")
	// This helper stays the namespace's init, as root (no execution can
	// signal or trace it): it reaps orphans until the execution ends.
	for {
		var ws syscall.WaitStatus
		got, err := syscall.Wait4(-1, &ws, 0, nil)
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return fmt.Errorf("wait: %w", err)
		}
		if got != pid {
			continue
		}
		trace.step("execution")
		code := ws.ExitStatus()
		if ws.Signaled() {
			code = 128 + int(ws.Signal())
		}
		finish(code)
	}
}

// cgroupView gives the execution a cgroup namespace rooted at its
// kernel's cgroups, and mounts each hierarchy the kernel is in (v2's
// unified one, or v1's memory, pids and cpu: those of its join files,
// Spec.Cgroups) anew over the host's, read-only: it shows the kernel's own
// cgroup as its root, as a container sees its cgroups. Listing
// /sys/fs/cgroup no longer names the agent's other kernels, and the
// kernel reads its own limits and usage at the usual paths
// (/sys/fs/cgroup/memory.max, /sys/fs/cgroup/memory/memory.limit_in_bytes),
// where /proc/self/cgroup now says "/". The calling thread joined the
// kernel's cgroups (v1: this thread alone) and forks the execution: the
// namespace is this thread's, and the execution's.
func cgroupView(host []mount, joined []string) error {
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
	if err := unix.Unshare(unix.CLONE_NEWCGROUP); err != nil {
		return fmt.Errorf("cgroup view: new cgroup namespace: %w", err)
	}
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
		if err := unmount(m.point); err != nil {
			return fmt.Errorf("cgroup view: %w", err)
		}
		const flags = syscall.MS_NOSUID | syscall.MS_NODEV | syscall.MS_NOEXEC
		if err := syscall.Mount("cgroup", m.point, m.fstype, flags, strings.Join(opts, ",")); err != nil {
			return fmt.Errorf("cgroup view: mount %s: %w", m.point, err)
		}
		if err := syscall.Mount("", m.point, "", syscall.MS_REMOUNT|syscall.MS_BIND|syscall.MS_RDONLY|flags, ""); err != nil {
			return fmt.Errorf("cgroup view: %s read-only: %w", m.point, err)
		}
	}
	return nil
}

// cgroupMount is the cgroup mount that path is on.
func cgroupMount(host []mount, path string) (mount, bool) {
	var found mount
	ok := false
	for _, m := range host {
		if (m.fstype == "cgroup" || m.fstype == "cgroup2") && under(path, []string{m.point}) && len(m.point) >= len(found.point) {
			found, ok = m, true
		}
	}
	return found, ok
}

// readOnly makes every mount of this namespace read-only but those keep
// says to leave writable: one mount_setattr(2) over the whole tree (Linux
// 5.12), then the kept ones made writable again, each on its own; where
// the kernel has no mount_setattr or refuses it, one remount for each
// mount but the kept, as before it. The one call takes 20–40 µs with a
// host of 20 mounts or 220 (a host that runs containers), where the
// remounts took 0.1 ms and about 1 ms (BENCHMARKS.md, "Ninth round").
func readOnly(host []mount, keep func(mount) bool) error {
	var err error = syscall.ENOSYS
	if !remountOnly {
		err = unix.MountSetattr(unix.AT_FDCWD, "/", unix.AT_RECURSIVE, &unix.MountAttr{Attr_set: unix.MOUNT_ATTR_RDONLY})
	}
	if err == nil {
		for _, m := range host {
			if m.fstype != "devpts" || !keep(m) {
				continue // only the writable ones that stay need it back
			}
			err := unix.MountSetattr(unix.AT_FDCWD, m.point, 0, &unix.MountAttr{Attr_clr: unix.MOUNT_ATTR_RDONLY})
			if err != nil && err != syscall.ENOENT && err != syscall.EINVAL {
				return fmt.Errorf("keep %s writable: %w", m.point, err)
			}
		}
		return nil
	}
	for _, m := range host {
		if keep(m) {
			continue
		}
		flags := m.flags | syscall.MS_REMOUNT | syscall.MS_BIND | syscall.MS_RDONLY
		err := syscall.Mount("", m.point, "", flags, "")
		if err != nil && err != syscall.ENOENT && err != syscall.EINVAL {
			return fmt.Errorf("make %s read-only: %w", m.point, err)
		}
	}
	return nil
}

// remountOnly makes readOnly take the remounts' way (tests).
var remountOnly bool

// makeBin makes BinDir with the links of bin.
func makeBin(bin map[string]string) error {
	if len(bin) == 0 {
		return nil
	}
	for _, d := range []string{BinDir[:len(BinDir)-len("/bin")], BinDir} {
		if err := os.Mkdir(d, 0o755); err != nil {
			return fmt.Errorf("make %s: %w", BinDir, err)
		}
	}
	for name, target := range bin {
		for i := 0; i < len(name); i++ {
			if name[i] == '/' || name[i] == 0 {
				return fmt.Errorf("bad command name %q", name)
			}
		}
		if name == "" || name == "." || name == ".." {
			return fmt.Errorf("bad command name %q", name)
		}
		if err := os.Symlink(target, BinDir+"/"+name); err != nil {
			return fmt.Errorf("make %s: %w", BinDir, err)
		}
	}
	return nil
}

// finish ends every process the execution left (the init of a pid
// namespace kills them all with kill(-1): none can fork past it), reaps
// them, reports code on StatusFD, closes the execution's output and exits
// with code. The report comes before the exit on purpose: the exit of a
// namespace's last process tears its mounts down, which waits for an RCU
// grace period (milliseconds) before the kernel closes this process's files
// and lets the agent reap it.
func finish(code int) {
	_ = syscall.Kill(-1, syscall.SIGKILL)
	for {
		_, err := syscall.Wait4(-1, nil, 0, nil)
		if err != nil && err != syscall.EINTR {
			break // ECHILD: none left
		}
	}
	trace.step("finish")
	trace.flush()
	if statusOK {
		_, _ = syscall.Write(StatusFD, []byte(strconv.Itoa(code)))
	}
	for fd := 0; fd <= StatusFD; fd++ {
		_ = syscall.Close(fd)
	}
	os.Exit(code)
}

// KernelSource is the source of every kernel's work dir mount (a tmpfs),
// by which an execution's sandbox finds the kernels of other agents on the
// host and unmounts them from its view.
const KernelSource = "bai-kernel"

// KernelsRootSource is the source of the tmpfs an agent mounts at its
// kernels' root, under which the kernels' work dirs are mounted.
const KernelsRootSource = "bai-kernels"

// mount is one line of /proc/self/mountinfo.
type mount struct {
	id, parent string // mount ids
	point      string
	fstype     string
	source     string  // bai-kernel(s) for a kernel's work dir and an agent's kernels' root
	super      string  // the file system's own options ("rw,nsdelegate")
	flags      uintptr // the per-mount flags to keep: nosuid, nodev, noexec, atime
	ro         bool    // the mount is read-only
}

// Cgroup2 is the first cgroup2 mount of the caller's mount namespace:
// its mount point and its file system's options; point is "" where there
// is none.
func Cgroup2() (point string, options []string, err error) {
	ms, err := readMounts()
	if err != nil {
		return "", nil, err
	}
	for _, m := range ms {
		if m.fstype == "cgroup2" {
			return m.point, strings.Split(m.super, ","), nil
		}
	}
	return "", nil, nil
}

// MountPoint is a mount of the caller's mount namespace: where it is and
// its source.
type MountPoint struct{ Point, Source string }

// MountPoints lists the mounts of the caller's mount namespace, parents
// before children.
func MountPoints() ([]MountPoint, error) {
	ms, err := readMounts()
	if err != nil {
		return nil, err
	}
	points := make([]MountPoint, len(ms))
	for i, m := range ms {
		points[i] = MountPoint{Point: m.point, Source: m.source}
	}
	return points, nil
}

// readMounts lists this namespace's mounts, parents before children.
func readMounts() ([]mount, error) {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("read mounts: %w", err)
	}
	var ms []mount
	for _, line := range strings.Split(string(data), "\n") {
		// id parent major:minor root point options [optional...] - fstype source super
		f := strings.Fields(line)
		if len(f) < 10 {
			continue
		}
		m := mount{id: f[0], parent: f[1], point: unescape(f[4])}
		for _, o := range strings.Split(f[5], ",") {
			switch o {
			case "ro":
				m.ro = true
			case "nosuid":
				m.flags |= syscall.MS_NOSUID
			case "nodev":
				m.flags |= syscall.MS_NODEV
			case "noexec":
				m.flags |= syscall.MS_NOEXEC
			case "noatime":
				m.flags |= syscall.MS_NOATIME
			case "nodiratime":
				m.flags |= syscall.MS_NODIRATIME
			case "relatime":
				m.flags |= syscall.MS_RELATIME
			case "strictatime":
				m.flags |= syscall.MS_STRICTATIME
			case "nosymfollow":
				m.flags |= 0x100 // MS_NOSYMFOLLOW
			}
		}
		for i := 6; i < len(f)-1; i++ {
			if f[i] == "-" {
				m.fstype = f[i+1]
				if i+2 < len(f) {
					m.source = unescape(f[i+2])
				}
				if i+3 < len(f) {
					m.super = f[i+3]
				}
				break
			}
		}
		ms = append(ms, m)
	}
	return ms, nil
}

// unescape undoes mountinfo's octal escapes (\040 for a space, ...).
func unescape(s string) string {
	if !strings.Contains(s, "\\") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// subtreeTops are the mount points to unmount, in this order, so that
// every mount under dirs leaves the namespace: a lazy unmount takes the
// mounts below its mount with it, so a mount whose parent goes too is
// left to its parent (one unmount for the kernels' root and every kernel
// under it, not one per kernel), except one stacked on its parent at the
// same point, which hides the parent from an unmount by path and so goes
// first, on its own. ms are parents before children.
func subtreeTops(ms []mount, dirs []string) []string {
	gone := map[string]string{} // id → point, of the mounts under dirs
	for _, m := range ms {
		if under(m.point, dirs) {
			gone[m.id] = m.point
		}
	}
	var tops []string
	for i := len(ms) - 1; i >= 0; i-- {
		m := ms[i]
		if _, ok := gone[m.id]; !ok {
			continue
		}
		if pp, ok := gone[m.parent]; ok && pp != m.point {
			continue // goes with its parent
		}
		tops = append(tops, m.point)
	}
	return tops
}

// unmount detaches the mount at p from this namespace; one that is gone
// already (with its parent) is no error.
func unmount(p string) error {
	err := syscall.Unmount(p, syscall.MNT_DETACH)
	if err != nil && err != syscall.ENOENT && err != syscall.EINVAL {
		return fmt.Errorf("unmount %s: %w", p, err)
	}
	return nil
}

// holds reports whether p is above one of dirs.
func holds(p string, dirs []string) bool {
	for _, d := range dirs {
		if p == "/" || strings.HasPrefix(d, strings.TrimSuffix(p, "/")+"/") {
			return true
		}
	}
	return false
}

// under reports whether p is one of dirs or below one.
func under(p string, dirs []string) bool {
	for _, d := range dirs {
		if p == d || strings.HasPrefix(p, strings.TrimSuffix(d, "/")+"/") {
			return true
		}
	}
	return false
}
