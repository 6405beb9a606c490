package sandboxinit

import (
	"bytes"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// serverNS is the spawn server's mount namespace: the host's without the
// kernels' root. An agent's every kernel has its work directory mounted
// under that root on the host, and a namespace holding them all would
// make every execution's set-up read them in mountinfo, copy them into
// its namespace (CLONE_NEWNS) and shed them again, at a cost that grows
// with the kernels on the host (BENCHMARKS.md, "Twelfth round"). A
// kernel's work directory comes with its request instead, as a detached
// mount (Spawn's tree).
//
// The namespace is a slave of the host's: where the host's mounts are
// shared (a systemd host), what the host mounts and unmounts shows in it
// at once. Where they are private, nothing would: so the server watches
// the host's mount table (a mountinfo file opened in the host's
// namespace polls POLLPRI at each change), and where a change is not
// under the kernels' root (an operator mounted or unmounted a file
// system) it makes its namespace again from the host's, so that it
// neither misses a mount nor holds one the host let go. The kernels' own
// mounts come and go with every kernel: a look at the host's mountinfo
// (all of it) is taken at most once each MountsRecheck (100 ms), idle or
// not, and one that finds only the kernels' mounts changed costs nothing
// more.
type serverNS struct {
	root     string // the kernels' root, kept out
	host     int    // the host's mount namespace (setns)
	hostIno  uint64 // its inode
	hostInfo int    // the host's mountinfo: POLLPRI at a change
	seen     []byte // the host's mounts outside root, as of the namespace
	buf      []byte
}

// isolated is the kernels' root the serving thread's namespace is made
// without, while it is (serverNS.make); "" while the thread is in the
// host's namespace, and in any other process.
var (
	isolated    string
	isolatedIno uint64 // the host's namespace's inode, while isolated
)

// dropKernelsRoot unmounts root where it came back into the serving
// thread's own namespace (mounted again on the host, and propagated):
// never in the host's.
func dropKernelsRoot(root string) {
	if isolated == "" || root != isolated {
		return
	}
	var st unix.Stat_t
	if err := unix.Stat("/proc/thread-self/ns/mnt", &st); err != nil || st.Ino == isolatedIno {
		return
	}
	_ = unix.Unmount(root, unix.MNT_DETACH)
}

// isolate gives the calling thread, locked to its goroutine for good, a
// namespace as serverNS says, kept out of root; nil, with the thread in
// the host's namespace, where it cannot (not root, no root given).
func isolate(root string) *serverNS {
	if root == "" || !filepath.IsAbs(root) {
		return nil
	}
	host, err := unix.Open("/proc/thread-self/ns/mnt", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil
	}
	info, err := unix.Open("/proc/thread-self/mountinfo", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		unix.Close(host)
		return nil
	}
	var st unix.Stat_t
	if err := unix.Fstat(host, &st); err != nil {
		unix.Close(host)
		unix.Close(info)
		return nil
	}
	ns := &serverNS{root: root, host: host, hostIno: st.Ino, hostInfo: info}
	if ns.seen, err = ns.hostMounts(); err != nil || ns.make() != nil {
		unix.Close(host)
		unix.Close(info)
		return nil
	}
	return ns
}

// make makes the thread's namespace anew from the host's, which the
// thread is in: a copy, a slave of it, without root.
func (ns *serverNS) make() error {
	isolated = ""
	if err := unix.Unshare(unix.CLONE_NEWNS); err != nil {
		return err
	}
	// A slave before anything is unmounted: in a copy of shared mounts,
	// an unmount would go back to the host's.
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_SLAVE, ""); err != nil {
		// Back to the host's, whose mounts this one still shares.
		_ = unix.Setns(ns.host, unix.CLONE_NEWNS)
		return err
	}
	_ = unix.Unmount(ns.root, unix.MNT_DETACH) // EINVAL: not a mount of its own
	isolated, isolatedIno = ns.root, ns.hostIno
	return nil
}

// hostMounts are the host's mountinfo lines of mounts outside root.
func (ns *serverNS) hostMounts() ([]byte, error) {
	if _, err := unix.Seek(ns.hostInfo, 0, 0); err != nil {
		return nil, err
	}
	ns.buf = ns.buf[:0]
	for {
		if len(ns.buf) == cap(ns.buf) {
			ns.buf = append(ns.buf, make([]byte, 16<<10)...)[:len(ns.buf)]
		}
		n, err := unix.Read(ns.hostInfo, ns.buf[len(ns.buf):cap(ns.buf)])
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, err
		}
		if n == 0 {
			break
		}
		ns.buf = ns.buf[:len(ns.buf)+n]
	}
	var out []byte
	for line := range bytes.Lines(ns.buf) {
		// id parent major:minor root point ...
		f := bytes.SplitN(line, []byte(" "), 6)
		if len(f) < 6 || under(unescape(string(f[4])), []string{ns.root}) {
			continue
		}
		out = append(out, line...)
	}
	return out, nil
}

// outside reads the host's mounts: true where those outside the kernels'
// root differ from the namespace's.
func (ns *serverNS) outside() bool {
	now, err := ns.hostMounts()
	if err != nil {
		return true
	}
	return !bytes.Equal(now, ns.seen)
}

// renew makes the namespace again from the host's, as of now.
func (ns *serverNS) renew() {
	seen, err := ns.hostMounts()
	if err != nil {
		return
	}
	if err := unix.Setns(ns.host, unix.CLONE_NEWNS); err != nil {
		return
	}
	isolated = ""
	if err := ns.make(); err != nil {
		// In the host's namespace: Spawn leaves the kernels out of the
		// set-up all the same, at the old cost.
		return
	}
	ns.seen = seen
}
