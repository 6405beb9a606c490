package agent

import (
	"errors"
	"fmt"
	"slices"

	"golang.org/x/sys/unix"

	"github.com/bai-sh/bai/services/agent/internal/sandboxinit"
)

// Every execution's helper joins its kernel's cgroups (Spec.Cgroups). A
// join takes the kernel's cgroup_threadgroup_rwsem for writing, and
// unless the cgroup2 file system is mounted with favordynmods, the first
// join after a quiet spell (some 20 to 50 ms without one) waits for a
// whole RCU grace period: 5 to 16 ms on the machines of BENCHMARKS.md,
// against 0.1 ms with it. That is the wait of an execution into an idle
// agent's kernel, the one a user at a terminal makes. favordynmods
// (Linux 6.0) makes forks and exits a little dearer instead, the right
// trade for a host that starts sandboxes all day. It is one flag of the
// kernel's default cgroup hierarchy, so it counts for the v1 hierarchies
// of a hybrid host too; some kernels (6.18) keep it on until reboot once
// it was set.

// cgroup2Flags are the cgroup2 mount options the kernel knows as flags
// (Documentation/admin-guide/cgroup-v2.rst): a reconfiguration must give
// again every one that is set, or it clears it.
var cgroup2Flags = []string{
	"nsdelegate", "favordynmods", "memory_localevents", "memory_recursiveprot",
	"memory_hugetlb_accounting", "pids_localevents",
}

// errHostCannot wraps the reasons a host cannot take favordynmods: an
// old kernel, an option bai does not know, a cgroup namespace of its own.
// They are said and left, not failed.
var errHostCannot = errors.New("this host cannot take favordynmods")

// favorDynMods turns favordynmods on for the cgroup2 mount of the agent's
// mount namespace, keeping its other options. It says what it did in
// done ("" where it was on already); err says why it could not.
func favorDynMods() (done string, err error) {
	point, opts, err := sandboxinit.Cgroup2()
	if err != nil {
		return "", err
	}
	if point == "" {
		return "", errors.New("no cgroup2 file system is mounted")
	}
	set, err := reconfigureFlags(opts)
	if err != nil {
		return "", fmt.Errorf("%s: %w", point, err)
	}
	if set == nil {
		return "", nil
	}
	if err := reconfigureCgroup2(point, set); err != nil {
		return "", fmt.Errorf("%s: %w", point, err)
	}
	_, opts, err = sandboxinit.Cgroup2()
	if err != nil {
		return "", err
	}
	if !slices.Contains(opts, "favordynmods") {
		return "", fmt.Errorf("%s: the kernel kept favordynmods off (the agent is not in the host's cgroup namespace?): %w", point, errHostCannot)
	}
	return fmt.Sprintf("cgroup2 at %s mounted with favordynmods now (options %v): an execution into an idle agent no longer waits an RCU grace period (5-16 ms) to join its cgroups; --keep-cgroup-mount (bai-agent, bai-server) leaves it as it is", point, opts), nil
}

// FavorDynMods says whether the cgroup2 mount of the caller's mount
// namespace has favordynmods: "on", "off", or why it cannot tell.
func FavorDynMods() string {
	point, opts, err := sandboxinit.Cgroup2()
	switch {
	case err != nil:
		return err.Error()
	case point == "":
		return "unknown (no cgroup2 mount)"
	case slices.Contains(opts, "favordynmods"):
		return "on"
	}
	return "off"
}

// reconfigureFlags are the flags to give a reconfiguration of a cgroup2
// mount with options opts so that favordynmods is on and nothing else
// changes; nil where it is on already. An option it does not know is an
// error: the reconfiguration would clear it.
func reconfigureFlags(opts []string) ([]string, error) {
	var set []string
	for _, o := range opts {
		switch {
		case o == "favordynmods":
			return nil, nil
		case o == "rw" || o == "ro" || o == "seclabel" || o == "":
			// Not the file system's flags: read-only is the mount's, and
			// seclabel is the security module's.
		case slices.Contains(cgroup2Flags, o):
			set = append(set, o)
		default:
			return nil, fmt.Errorf("option %q unknown to bai: left as it is (%w)", o, errHostCannot)
		}
	}
	return append(set, "favordynmods"), nil
}

// reconfigureCgroup2 sets flags on the cgroup2 file system at point:
// fspick, one fsconfig per flag, then the reconfiguration. Mount flags
// (nosuid, nodev, ...) are not touched: they are the mount's, not the
// file system's.
func reconfigureCgroup2(point string, flags []string) error {
	fd, err := unix.Fspick(unix.AT_FDCWD, point, unix.FSPICK_CLOEXEC|unix.FSPICK_NO_AUTOMOUNT|unix.FSPICK_SYMLINK_NOFOLLOW)
	if err != nil {
		return fmt.Errorf("fspick: %w", err)
	}
	defer unix.Close(fd)
	for _, f := range flags {
		if err := unix.FsconfigSetFlag(fd, f); err != nil {
			if f == "favordynmods" && errors.Is(err, unix.EINVAL) {
				return fmt.Errorf("fsconfig %s: %w (a kernel older than 6.0 has no favordynmods: %w)", f, err, errHostCannot)
			}
			return fmt.Errorf("fsconfig %s: %w", f, err)
		}
	}
	if _, _, e := unix.Syscall6(unix.SYS_FSCONFIG, uintptr(fd), unix.FSCONFIG_CMD_RECONFIGURE, 0, 0, 0, 0); e != 0 {
		return fmt.Errorf("fsconfig reconfigure: %w", e)
	}
	return nil
}
