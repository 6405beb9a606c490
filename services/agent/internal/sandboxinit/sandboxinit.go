// Package sandboxinit is the process runtime's sandbox helper: the first
// process in a kernel execution's namespaces. It imports nothing beyond
// the standard library's basics, so that a binary made of it alone
// (cmd/bai-sandbox-init) starts in well under a millisecond, where the
// agent's own binary, re-executed, pays for its runtime and package
// initialisation on every execution.
package sandboxinit

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"runtime"
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
	if data == ServerMode {
		serve() // never returns
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
	// This goroutine is locked to its thread (Main): a v1 tasks file moves
	// this thread, which forks the execution below.
	b := newBuilder()
	if _, err := b.join(s.Cgroups, true); err != nil {
		return err
	}
	if err := b.prologue(s, -1); err != nil {
		return err
	}
	if err := b.p.runTraced(0); err != nil {
		return err
	}
	tree := b.p.regs[regTree] != noFD
	host, err := readMounts()
	if err != nil {
		return err
	}
	trace.step("readmounts")
	n := len(b.p.steps)
	b.leave(s, host)
	if err := b.p.runTraced(n); err != nil {
		return err
	}
	// Every other host mount read-only in here: a kernel writes only its
	// work directory and its private temporary directories below, never
	// a directory of the host that other kernels share (/var/tmp,
	// /dev/shm, /var/crash, ...). The mounts under the hidden directories
	// (every kernel's work directory) go instead, below.
	if err := readOnly(host, keepWritable(s)); err != nil {
		return err
	}
	trace.step("remount-ro")
	n = len(b.p.steps)
	if err := b.finish(s, host, tree, int(b.p.regs[regWork]), true); err != nil {
		return err
	}
	if err := b.p.runTraced(n); err != nil {
		return err
	}
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
	if !remountOnly {
		b := newBuilder()
		b.readOnly(host, keep)
		// Its first step is the mount_setattr over the tree: where that
		// one fails (no such call, or refused), the remounts below.
		if failed, errno := b.p.run(0, len(b.p.steps)); failed != 0 {
			return b.p.err(failed, errno) // nil where none failed (-1)
		}
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
	// The thread's: the spawn server's serving thread has a namespace of
	// its own (isolate).
	data, err := os.ReadFile("/proc/thread-self/mountinfo")
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
