package agent

import (
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// writeSmall writes v to the existing file path (a cgroup file) in three
// system calls: open, write, close. os.WriteFile makes a runtime *File of
// it, which sets and clears non-blocking mode and registers the file with
// the poller and takes it off again: eight to ten calls, about three times
// the CPU (22.7 against 7.3 µs a write measured on a PVM guest, where
// every kernel entry is dear). A kernel's start and end write and read
// about ten such files.
func writeSmall(path, v string) error {
	fd, err := openSmall(path, unix.O_WRONLY)
	if err != nil {
		return err
	}
	n, err := unix.Write(fd, []byte(v))
	for err == unix.EINTR {
		n, err = unix.Write(fd, []byte(v))
	}
	unix.Close(fd)
	switch {
	case err != nil:
		return &os.PathError{Op: "write", Path: path, Err: err}
	case n != len(v):
		return &os.PathError{Op: "write", Path: path, Err: io.ErrShortWrite}
	}
	return nil
}

// readSmall reads the whole of path (a cgroup or proc file) in a few
// system calls (see writeSmall).
func readSmall(path string) ([]byte, error) {
	fd, err := openSmall(path, unix.O_RDONLY)
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	buf := make([]byte, 0, 512)
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := unix.Read(fd, buf[len(buf):cap(buf)])
		switch {
		case err == unix.EINTR:
			continue
		case err != nil:
			return nil, &os.PathError{Op: "read", Path: path, Err: err}
		case n == 0:
			return buf, nil
		}
		buf = buf[:len(buf)+n]
	}
}

func openSmall(path string, mode int) (int, error) {
	for {
		fd, err := unix.Open(path, mode|unix.O_CLOEXEC, 0)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return -1, &os.PathError{Op: "open", Path: path, Err: err}
		}
		return fd, nil
	}
}
