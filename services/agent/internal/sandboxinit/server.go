package sandboxinit

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// The spawn server. An init that Spawn clones shares the memory of the
// process that cloned it, and holds it for as long as the execution
// runs: every mapping of it, a file's lock through its mapping among them
// (bbolt maps its file). So the agent does not spawn: a small server of
// its own does (this binary, with Env set to ServerMode), whose memory
// holds nothing of the agent's. The agent sends it a request on a
// SOCK_SEQPACKET socket, at ServerFD: a Request as JSON, with the
// execution's stdin, stdout, stderr and report pipe as SCM_RIGHTS; the
// server answers a Reply, with a pidfd of the init where it started one.
// It reaps its inits, and exits at EOF.

// ServerMode as Env's value makes the helper binary the spawn server.
const ServerMode = "spawn-server"

// ServerFD is the spawn server's socket.
const ServerFD = 3

// MountsRecheck is how often at most the spawn server looks at the host's
// mounts once they changed (serverNS): a file system mounted or unmounted
// on the host shows in the executions started that long after, at most.
const MountsRecheck = 100 * time.Millisecond

// KernelsRootEnv names, in the spawn server's environment, the agent's
// kernels' root: the server keeps it out of its mount namespace (serve).
const KernelsRootEnv = "_BAI_SPAWN_KERNELS_ROOT"

// MaxRequest is the largest request the server takes; a larger one's
// execution goes through the helper.
const MaxRequest = 1 << 20

// Request is what the agent asks the spawn server for.
type Request struct {
	Spec  Spec    `json:"spec"`
	Flags uintptr `json:"flags"` // the namespaces
}

// Reply is the server's answer: Err, or a pidfd of the init.
type Reply struct {
	PID int    `json:"pid"`
	Err string `json:"err,omitempty"`
	// NoSpawn: this request cannot be spawned (ErrNoSpawn); the helper
	// must start it.
	NoSpawn bool `json:"no_spawn,omitempty"`
}

// serve is the spawn server's life. It serves on one thread, which has a
// mount namespace of its own (serverNS), and its inits are cloned from
// it.
func serve() {
	runtime.LockOSThread() // for good: the thread's namespace is the inits'
	ns := isolate(os.Getenv(KernelsRootEnv))
	var (
		mu    sync.Mutex
		dones = map[int]func(){} // the inits running
		child = make(chan struct{}, 1)
	)
	go func() { // the reaper
		for {
			var ws unix.WaitStatus
			pid, err := unix.Wait4(-1, &ws, unix.WALL, nil)
			switch {
			case err == unix.ECHILD:
				<-child
				continue
			case err != nil:
				continue
			}
			// An init reaped at once waits here for its done: mu is held
			// from its clone to then.
			mu.Lock()
			if d, ok := dones[pid]; ok {
				delete(dones, pid)
				d()
			}
			mu.Unlock()
		}
	}()
	buf := make([]byte, MaxRequest)
	oob := make([]byte, unix.CmsgSpace(4*8))
	var (
		changed bool      // the host's mounts changed since the last look
		looked  time.Time // the last look
	)
	for {
		if ns != nil {
			// A request, or a change of the host's mounts. Every kernel's
			// mount and unmount is one, and a look reads the host's whole
			// mountinfo: at most one look each MountsRecheck.
			timeout := -1
			if changed {
				wait := max(0, time.Until(looked.Add(MountsRecheck)))
				timeout = int((wait + time.Millisecond - 1) / time.Millisecond) // up, not to a busy 0
			}
			fds := []unix.PollFd{{Fd: ServerFD, Events: unix.POLLIN}, {Fd: int32(ns.hostInfo), Events: unix.POLLPRI}}
			if _, err := unix.Poll(fds, timeout); err != nil {
				continue // EINTR
			}
			changed = changed || fds[1].Revents&(unix.POLLPRI|unix.POLLERR) != 0
			if changed && time.Since(looked) >= MountsRecheck {
				changed, looked = false, time.Now()
				if ns.outside() {
					ns.renew()
				}
			}
			if fds[0].Revents == 0 {
				continue
			}
		}
		n, oobn, _, _, err := unix.Recvmsg(ServerFD, buf, oob, unix.MSG_CMSG_CLOEXEC)
		if err == unix.EINTR {
			continue
		}
		if err != nil || n == 0 {
			os.Exit(0) // the agent is gone
		}
		fds := ReceivedFDs(oob[:oobn])
		var rep Reply
		var pidfd = -1
		var req Request
		switch err := json.Unmarshal(buf[:n], &req); {
		case err != nil:
			rep.Err = err.Error()
		case len(fds) == 4:
			// An agent of before the work directory's copy came with the
			// request: its helper starts it.
			rep.NoSpawn = true
		case len(fds) != 5:
			rep.Err = fmt.Sprintf("%d descriptors, want 5", len(fds))
		default:
			mu.Lock() // until its done is known: the reaper waits for it
			pid, fd, done, err := Spawn(&req.Spec, req.Flags, [4]int(fds[:4]), fds[4])
			switch {
			case errors.Is(err, ErrNoSpawn):
				rep.NoSpawn = true
			case err != nil:
				rep.Err = err.Error()
			default:
				dones[pid] = done
				rep.PID, pidfd = pid, fd
				select {
				case child <- struct{}{}:
				default:
				}
			}
			mu.Unlock()
		}
		for _, fd := range fds {
			syscall.Close(fd)
		}
		out, _ := json.Marshal(rep)
		var rights []byte
		if pidfd >= 0 {
			rights = unix.UnixRights(pidfd)
		}
		err = unix.Sendmsg(ServerFD, out, rights, nil, 0)
		if pidfd >= 0 {
			syscall.Close(pidfd)
		}
		if err != nil {
			os.Exit(0)
		}
	}
}

// ReceivedFDs are the descriptors of a message's SCM_RIGHTS, oob.
func ReceivedFDs(oob []byte) []int {
	var fds []int
	if cms, err := unix.ParseSocketControlMessage(oob); err == nil {
		for _, cm := range cms {
			if got, err := unix.ParseUnixRights(&cm); err == nil {
				fds = append(fds, got...)
			}
		}
	}
	return fds
}
