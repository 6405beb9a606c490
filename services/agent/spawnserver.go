package agent

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/bai-sh/bai/services/agent/internal/sandboxinit"
)

// spawnServer is the agent's side of its spawn server (sandboxinit's
// server.go): a process of the helper binary, started on the first
// execution, that starts the executions without a helper of their own.
// Its inits share its memory, not the agent's: they hold none of the
// agent's files, state db included, after a crash of the agent. One that
// died is started again on the next request.
type spawnServer struct {
	exe  string
	root string // the kernels' root, kept out of its mount namespace

	mu   sync.Mutex
	conn int // our end of its socket; -1: none
	null int // /dev/null, every execution's stdin; -1: not open yet
	cmd  *exec.Cmd
	buf  []byte
	oob  []byte
}

func newSpawnServer(exe, root string) *spawnServer {
	return &spawnServer{exe: exe, root: root, conn: -1, null: -1, buf: make([]byte, 4096), oob: make([]byte, unix.CmsgSpace(4))}
}

// startLocked starts the server.
func (s *spawnServer) startLocked() error {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("spawn server: %w", err)
	}
	// A request of up to MaxRequest bytes is one message.
	if err := unix.SetsockoptInt(fds[0], unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, 2*sandboxinit.MaxRequest); err != nil {
		_ = unix.SetsockoptInt(fds[0], unix.SOL_SOCKET, unix.SO_SNDBUF, 2*sandboxinit.MaxRequest)
	}
	// A server that does not answer in 10 s is taken for dead (a spawn
	// takes about a millisecond): a new one is started.
	_ = unix.SetsockoptTimeval(fds[0], unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Sec: 10})
	theirs := os.NewFile(uintptr(fds[1]), "spawn-server")
	cmd := &exec.Cmd{
		Path:        s.exe,
		Args:        []string{"bai-spawn-server"},
		Dir:         "/",
		Env:         []string{sandboxInitEnv + "=" + sandboxinit.ServerMode, sandboxinit.KernelsRootEnv + "=" + s.root, "GOMAXPROCS=2"},
		ExtraFiles:  []*os.File{theirs}, // sandboxinit.ServerFD
		SysProcAttr: &syscall.SysProcAttr{Setpgid: true},
	}
	err = cmd.Start()
	theirs.Close()
	if err != nil {
		syscall.Close(fds[0])
		return fmt.Errorf("spawn server: %w", err)
	}
	go cmd.Wait() //nolint:errcheck // reaps it once it exits, at EOF
	s.conn, s.cmd = fds[0], cmd
	return nil
}

// closeLocked lets the server go: it exits at EOF, and its inits run on.
func (s *spawnServer) closeLocked() {
	if s.conn >= 0 {
		syscall.Close(s.conn)
		s.conn = -1
	}
}

func (s *spawnServer) close() {
	if s == nil {
		return
	}
	s.mu.Lock()
	s.closeLocked()
	if s.null >= 0 {
		syscall.Close(s.null)
		s.null = -1
	}
	s.mu.Unlock()
}

// spawn asks the server to start spec's execution in namespaces flags
// with out (stdout, stderr, the init's report) and /dev/null for stdin,
// and its work directory's mount as tree (a detached copy: the server's
// namespace has none of the kernels' mounts); it answers a pidfd of the
// init, or sandboxinit.ErrNoSpawn where the helper must.
func (s *spawnServer) spawn(spec *initSpec, flags uintptr, out [3]int, tree int) (*os.File, error) {
	data, err := json.Marshal(sandboxinit.Request{Spec: *spec, Flags: flags})
	if err != nil {
		return nil, err
	}
	if len(data) > sandboxinit.MaxRequest {
		return nil, sandboxinit.ErrNoSpawn
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.null < 0 {
		// One for all: reading /dev/null is the same whoever shares it.
		if s.null, err = unix.Open(os.DevNull, unix.O_RDONLY|unix.O_CLOEXEC, 0); err != nil {
			s.null = -1
			return nil, fmt.Errorf("spawn server: %w", err)
		}
	}
	stdio := [5]int{s.null, out[0], out[1], out[2], tree}
	var last error
	for range 2 { // a server that died is started again, once
		if s.conn < 0 {
			if err := s.startLocked(); err != nil {
				return nil, err
			}
		}
		for last = unix.EINTR; last == unix.EINTR; {
			last = unix.Sendmsg(s.conn, data, unix.UnixRights(stdio[:]...), nil, unix.MSG_NOSIGNAL)
		}
		if last == nil {
			var n, oobn int
			for last = unix.EINTR; last == unix.EINTR; {
				n, oobn, _, _, last = unix.Recvmsg(s.conn, s.buf, s.oob, unix.MSG_CMSG_CLOEXEC)
			}
			if last == nil && n > 0 {
				return s.reply(s.buf[:n], s.oob[:oobn])
			}
		}
		s.closeLocked()
	}
	return nil, fmt.Errorf("spawn server: %v", last)
}

// reply is a request's reply: the init's pidfd, or why not.
func (s *spawnServer) reply(data, oob []byte) (*os.File, error) {
	fds := sandboxinit.ReceivedFDs(oob)
	var rep sandboxinit.Reply
	err := json.Unmarshal(data, &rep)
	switch {
	case err != nil:
	case rep.NoSpawn:
		err = sandboxinit.ErrNoSpawn
	case rep.Err != "":
		err = fmt.Errorf("%s", rep.Err)
	case len(fds) != 1:
		err = fmt.Errorf("spawn server: %d descriptors, want a pidfd", len(fds))
	default:
		return os.NewFile(uintptr(fds[0]), fmt.Sprintf("pidfd:%d", rep.PID)), nil
	}
	for _, fd := range fds {
		syscall.Close(fd)
	}
	return nil, err
}
