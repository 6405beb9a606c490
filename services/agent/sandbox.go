package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"syscall"
)

// The sandbox of the process runtime. Where the agent is root, each
// execution starts as a helper: this same binary, re-executed with
// sandboxInitEnv set, in new pid, mount, ipc, uts and network namespaces.
// The package's init function sees the variable and, before anything else
// runs, joins the kernel's cgroups, mounts a fresh /proc, a private /tmp,
// the kernel's work directory at /home/work (over an empty /home), hides
// the agent's data directory, sets the host name and rlimits, drops to the
// kernel's own unprivileged uid with no new privileges, and executes the
// interpreter. Every binary that links this package can thus be the helper:
// bai-agent, the all-in-one server, and test binaries.

// sandboxInitEnv carries the helper's initSpec, as JSON.
const sandboxInitEnv = "_BAI_SANDBOX_INIT"

// KernelWorkDir is where a sandboxed kernel sees its work directory.
const KernelWorkDir = "/home/work"

// initSpec is what the helper sets up before it executes Argv.
type initSpec struct {
	Argv     []string `json:"argv"`
	Env      []string `json:"env"`
	WorkDir  string   `json:"work_dir"` // on the host
	Hide     []string `json:"hide"`     // host directories hidden under an empty tmpfs
	Cgroups  []string `json:"cgroups"`  // cgroup.procs files to join
	UID      int      `json:"uid"`
	Hostname string   `json:"hostname"`
	TmpSize  int64    `json:"tmp_size"`
	NoFile   uint64   `json:"nofile"`
	FSize    uint64   `json:"fsize"`
}

func init() {
	data, ok := os.LookupEnv(sandboxInitEnv)
	if !ok {
		return
	}
	runtime.LockOSThread()
	var spec initSpec
	err := json.Unmarshal([]byte(data), &spec)
	if err == nil {
		err = sandboxInit(&spec)
	}
	// sandboxInit only returns on failure.
	fmt.Fprintf(os.Stderr, "bai: sandbox: %v\n", err)
	os.Exit(exitOnStart)
}

func sandboxInit(s *initSpec) error {
	if len(s.Argv) == 0 {
		return errors.New("no command")
	}
	for _, f := range s.Cgroups {
		if err := os.WriteFile(f, []byte("0"), 0); err != nil {
			return fmt.Errorf("join cgroup: %w", err)
		}
	}
	work, err := syscall.Open(s.WorkDir, syscall.O_RDONLY|syscall.O_DIRECTORY|syscall.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open work dir: %w", err)
	}
	if err := syscall.Mount("", "/", "", syscall.MS_REC|syscall.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make mounts private: %w", err)
	}
	if err := syscall.Mount("proc", "/proc", "proc", syscall.MS_NOSUID|syscall.MS_NODEV|syscall.MS_NOEXEC, ""); err != nil {
		return fmt.Errorf("mount /proc: %w", err)
	}
	for _, d := range s.Hide {
		if _, err := os.Stat(d); err != nil {
			continue // under a directory hidden already
		}
		if err := syscall.Mount("tmpfs", d, "tmpfs", syscall.MS_NOSUID|syscall.MS_NODEV|syscall.MS_NOEXEC|syscall.MS_RDONLY, "size=4k,mode=0700"); err != nil {
			return fmt.Errorf("hide %s: %w", d, err)
		}
	}
	if err := syscall.Mount("tmpfs", "/home", "tmpfs", syscall.MS_NOSUID|syscall.MS_NODEV, "size=64k,mode=0755"); err != nil {
		return fmt.Errorf("mount /home: %w", err)
	}
	if err := os.Mkdir(KernelWorkDir, 0o755); err != nil {
		return err
	}
	if err := syscall.Mount("/proc/self/fd/"+strconv.Itoa(work), KernelWorkDir, "", syscall.MS_BIND, ""); err != nil {
		return fmt.Errorf("mount work dir: %w", err)
	}
	syscall.Close(work)
	opts := "mode=1777"
	if s.TmpSize > 0 {
		opts += ",size=" + strconv.FormatInt(s.TmpSize, 10)
	}
	if err := syscall.Mount("tmpfs", "/tmp", "tmpfs", syscall.MS_NOSUID|syscall.MS_NODEV, opts); err != nil {
		return fmt.Errorf("mount /tmp: %w", err)
	}
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
	uid := uint32(s.UID)
	pid, err := syscall.ForkExec(s.Argv[0], s.Argv, &syscall.ProcAttr{
		Dir:   KernelWorkDir,
		Env:   s.Env,
		Files: []uintptr{0, 1, 2},
		Sys:   &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: uid, Groups: []uint32{}}},
	})
	if err != nil {
		return fmt.Errorf("start %s: %w", s.Argv[0], err)
	}
	// This helper stays the namespace's init, as root (no execution can
	// signal or trace it): it reaps orphans and, when the execution
	// ends, exits with its status, which ends every process it left.
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
		switch {
		case ws.Signaled():
			os.Exit(128 + int(ws.Signal()))
		default:
			os.Exit(ws.ExitStatus())
		}
	}
}

// SandboxOptions tunes the process runtime's sandbox.
type SandboxOptions struct {
	// Disable runs kernels as plain processes even where the agent is root.
	Disable bool
	// Network gives kernels the host's network; default: none (a network
	// namespace with only a loopback interface, down).
	Network bool
	// Pids is the most processes and threads a kernel may have. Default 512.
	Pids int64
	// WorkDirSize is the size limit of a kernel's work directory (a tmpfs).
	// Default 1 GiB.
	WorkDirSize int64
	// TmpSize is the size limit of a kernel's private /tmp. Default 256 MiB.
	TmpSize int64
	// NoFile is the kernel's open files limit. Default 1024.
	NoFile uint64
	// DefaultMem is the memory limit of a kernel whose slots give none.
	// Default 1 GiB.
	DefaultMem int64
	// Hide are more host directories hidden from kernels (the agent's data
	// directory always is).
	Hide []string
	// CgroupName names the parent of the kernels' cgroups. Default
	// "bai-" + a hash of the kernels' root directory, so that two agents
	// never touch each other's kernels.
	CgroupName string
}

// sandbox is what the process runtime could set up on this host.
type sandbox struct {
	opts   SandboxOptions
	cg     *cgroups // nil: no cgroups
	exe    string   // the helper binary
	notes  []string // what is missing, said once at start
	hide   []string
	active bool // namespaces, uid and mounts
}

// newSandbox probes the host. Where the process is not root, or lacks
// namespaces or cgroups, it runs with what it can and says so in notes.
func newSandbox(root string, opts SandboxOptions) *sandbox {
	if opts.Pids == 0 {
		opts.Pids = 512
	}
	if opts.WorkDirSize == 0 {
		opts.WorkDirSize = 1 << 30
	}
	if opts.TmpSize == 0 {
		opts.TmpSize = 256 << 20
	}
	if opts.NoFile == 0 {
		opts.NoFile = 1024
	}
	if opts.DefaultMem == 0 {
		opts.DefaultMem = 1 << 30
	}
	if opts.CgroupName == "" {
		abs, _ := filepath.Abs(root)
		h := fnv.New64a()
		h.Write([]byte(abs))
		opts.CgroupName = fmt.Sprintf("bai-%016x", h.Sum64())
	}
	sb := &sandbox{opts: opts}
	if opts.Disable {
		sb.notes = append(sb.notes, "sandbox disabled by configuration: kernels run as plain processes of the agent's user, without namespaces, cgroup limits or a work dir size limit")
		return sb
	}
	if os.Geteuid() != 0 {
		sb.notes = append(sb.notes, "agent is not root: kernels run as plain processes of the agent's user, without namespaces, cgroup limits or a work dir size limit")
		return sb
	}
	for _, ns := range []string{"pid", "mnt", "ipc", "uts", "net"} {
		if _, err := os.Stat("/proc/self/ns/" + ns); err != nil {
			sb.notes = append(sb.notes, "kernel lacks "+ns+" namespaces: kernels run as plain processes, without namespaces or uid change")
			break
		}
	}
	if len(sb.notes) == 0 {
		// The kernels' /home/work is mounted over /home, which must exist.
		if err := os.MkdirAll("/home", 0o755); err != nil {
			sb.notes = append(sb.notes, fmt.Sprintf("no /home (%v): kernels run as plain processes", err))
		}
	}
	if len(sb.notes) == 0 {
		exe, err := os.Executable()
		if err != nil {
			sb.notes = append(sb.notes, fmt.Sprintf("no helper binary (%v): kernels run as plain processes", err))
		} else {
			sb.exe, sb.active = exe, true
		}
	}
	cg, err := detectCgroups(opts.CgroupName)
	if err != nil {
		sb.notes = append(sb.notes, fmt.Sprintf("no cgroups (%v): kernels run without cpu, memory and pids limits", err))
	} else {
		sb.cg = cg
	}
	return sb
}

// kernelUID is the unprivileged uid (and gid) a kernel runs as: one of
// 2^20 uids from 2^20 up, by a hash of the kernel id, so that two kernels
// almost never share one and cannot signal or trace each other.
func kernelUID(kernelID string) int {
	h := fnv.New32a()
	h.Write([]byte(kernelID))
	return 1<<20 + int(h.Sum32()%(1<<20))
}
