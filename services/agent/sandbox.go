package agent

import (
	"fmt"
	"hash/fnv"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/bai-sh/bai/services/agent/internal/sandboxinit"
)

// The sandbox of the process runtime. Where the agent is root, each
// execution starts as a helper (package internal/sandboxinit), with
// sandboxInitEnv set, in new pid, mount, ipc, uts and network namespaces:
// the small bai-sandbox-init binary next to the agent's own binary, else
// this same binary, re-executed, whose package init function sees the
// variable. The helper joins the kernel's cgroups, mounts a fresh /proc, a private /tmp,
// the kernel's work directory at /home/work (over an empty /home), hides
// the agent's data directory, sets the host name and rlimits, drops to the
// kernel's own unprivileged uid with no new privileges, and executes the
// interpreter. Every binary that links this package can thus be the helper:
// bai-agent, the all-in-one server, and test binaries.

// sandboxInitEnv carries the helper's spec, as JSON.
const sandboxInitEnv = sandboxinit.Env

// KernelWorkDir is where a sandboxed kernel sees its work directory.
const KernelWorkDir = sandboxinit.WorkDir

// initSpec is what the helper sets up before it executes Argv.
type initSpec = sandboxinit.Spec

// helperName is the small helper binary looked for next to the agent's
// own; without it the agent's binary is its own helper.
const helperName = "bai-sandbox-init"

func init() {
	// Before anything else of this package runs; returns only where the
	// variable is unset.
	sandboxinit.Main()
}

// SandboxOptions tunes the process runtime's sandbox.
type SandboxOptions struct {
	// Disable runs kernels as plain processes even where the agent is root.
	Disable bool
	// Network gives every kernel the host's network; default: only the
	// kernels whose session asks for one (SessionSpec.Network, bai run
	// --network) have it, the others a network namespace with only a
	// loopback interface, down.
	Network bool
	// Pids is the most processes and threads a kernel may have. Default 512.
	Pids int64
	// WorkDirSize is the size limit of a kernel's work directory (a tmpfs).
	// Default 1 GiB.
	WorkDirSize int64
	// TmpSize is the size limit of each of a kernel's private /tmp and
	// /var/tmp. Default 256 MiB.
	TmpSize int64
	// ShmSize is the size limit of a kernel's private /dev/shm. Default
	// 64 MiB (Docker's).
	ShmSize int64
	// NoFile is the kernel's open files limit. Default 1024.
	NoFile uint64
	// DefaultMem is the memory limit of a kernel whose slots give none.
	// Default 1 GiB.
	DefaultMem int64
	// Hide are more host directories hidden from kernels (the agent's data
	// directory always is).
	Hide []string
	// Helper is the sandbox helper binary. Default: bai-sandbox-init next
	// to the agent's binary if it is there, else the agent's binary itself
	// (slower to start: some milliseconds more per execution).
	Helper string
	// Prestart is how many sandbox helpers wait started ahead of the
	// executions (prestart.go), where executions start through the
	// helper. Default 2; negative: none, each execution starts its own.
	Prestart int
	// ViaHelper starts every execution through the helper, as the first
	// process of its namespaces, as does BAI_SANDBOX_HELPER in the
	// agent's environment. Default: where the machine can
	// (sandboxinit.CanSpawn: amd64, Linux 5.12), the agent's spawn server
	// starts each execution, its set-up made by raw system calls in a
	// cloned init, with no helper process of its own (sandboxinit.Spawn).
	ViaHelper bool
	// CgroupName names the parent of the kernels' cgroups. Default
	// "bai-" + a hash of the kernels' root directory, so that two agents
	// never touch each other's kernels.
	CgroupName string
	// KeepCgroupMount leaves the host's cgroup2 mount as it is. Default:
	// where kernels get cgroups, the agent turns its favordynmods option
	// on (cgroupmount.go).
	KeepCgroupMount bool
}

// sandbox is what the process runtime could set up on this host.
type sandbox struct {
	opts  SandboxOptions
	cg    *cgroups // nil: no cgroups
	exe   string   // the helper binary
	notes []string // what is missing, said once at start
	// cgroupMount is what favorDynMods did ("" where nothing) and why it
	// could not; said once at start, apart from notes: the sandbox is
	// whole without it.
	cgroupMount    string
	cgroupMountErr error
	hide           []string
	active         bool         // namespaces, uid and mounts
	pool           *helperPool  // nil: no helpers started ahead
	server         *spawnServer // starts executions without a helper of their own; nil: the helper does

	shareOnce sync.Once   // the kernels' root made shared (shareRoot), on first use
	bound     atomic.Bool // it is: an execution sheds every kernel at once (Spec.KernelsRoot)
}

// share makes the kernels' root a shared mount of its own before the
// first kernel's mount or execution; where it cannot (kernels mounted
// from before, without it), no helpers are started ahead and each
// execution sheds the kernels' mounts one by one. Without a sandbox it
// does nothing.
func (sb *sandbox) share(root string) {
	if sb == nil || !sb.active {
		return
	}
	sb.shareOnce.Do(func() {
		if err := shareRoot(root); err != nil {
			sb.pool.close()
			return
		}
		sb.bound.Store(true)
	})
}

// cloneFlags are the namespaces of an execution's helper: a network
// namespace of its own unless the kernel or the agent's options ask for
// the host's.
func (sb *sandbox) cloneFlags(network bool) uintptr {
	flags := uintptr(syscall.CLONE_NEWPID | syscall.CLONE_NEWNS | syscall.CLONE_NEWIPC | syscall.CLONE_NEWUTS)
	if !sb.opts.Network && !network {
		flags |= syscall.CLONE_NEWNET
	}
	return flags
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
	if opts.ShmSize == 0 {
		opts.ShmSize = 64 << 20
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
		exe, err := helperBinary(opts.Helper)
		if err != nil {
			sb.notes = append(sb.notes, fmt.Sprintf("no helper binary (%v): kernels run as plain processes", err))
		} else {
			sb.exe, sb.active = exe, true
		}
	}
	if sb.active && !opts.ViaHelper && sandboxinit.CanSpawn() {
		sb.server = newSpawnServer(sb.exe, root)
	}
	if sb.active && sb.server == nil && opts.Prestart >= 0 {
		if opts.Prestart == 0 {
			opts.Prestart = 2
		}
		if mounted, under, _, err := rootMounts(root); err != nil || (under && !mounted) {
			if err == nil {
				err = fmt.Errorf("%s holds kernels mounted from before, not on a mount of its own", root)
			}
			sb.notes = append(sb.notes, fmt.Sprintf("no sandbox helpers started ahead (%v): each execution starts its own, some milliseconds slower (a restart with no session running ends this)", err))
		} else {
			sb.pool = &helperPool{exe: sb.exe, flags: sb.cloneFlags(false), size: opts.Prestart, maxAge: helperMaxAge}
		}
	}
	cg, err := detectCgroups(opts.CgroupName)
	if err != nil {
		sb.notes = append(sb.notes, fmt.Sprintf("no cgroups (%v): kernels run without cpu, memory and pids limits", err))
	} else {
		sb.cg = cg
		if !opts.KeepCgroupMount && sb.active {
			sb.cgroupMount, sb.cgroupMountErr = favorDynMods()
		}
	}
	return sb
}

// helperBinary is the sandbox helper: helper if set, else bai-sandbox-init
// next to this process's binary, else this process's binary.
func helperBinary(helper string) (string, error) {
	if helper != "" {
		if err := executable(helper); err != nil {
			return "", err
		}
		return helper, nil
	}
	exe, err := os.Executable()
	if err != nil {
		return "", err
	}
	if h := filepath.Join(filepath.Dir(exe), helperName); executable(h) == nil {
		return h, nil
	}
	return exe, nil
}

// executable reports why file is not an executable regular file.
func executable(file string) error {
	fi, err := os.Stat(file)
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
		return fmt.Errorf("%s is not an executable file", file)
	}
	return nil
}

// kernelUID is the unprivileged uid (and gid) a kernel runs as: one of
// 2^20 uids from 2^20 up, by a hash of the kernel id, so that two kernels
// almost never share one and cannot signal or trace each other.
func kernelUID(kernelID string) int {
	h := fnv.New32a()
	h.Write([]byte(kernelID))
	return 1<<20 + int(h.Sum32()%(1<<20))
}
