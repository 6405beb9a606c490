// Package safefs creates, writes, reads and lists files inside a directory
// that an untrusted process writes too (a kernel's work directory), on
// behalf of a privileged one (the agent, as root), so that nothing the
// untrusted process put there can redirect a write or a read out of it
// (read.go has the read side: OpenFile, Lstat, ReadDir).
//
// Every path is resolved one component at a time from an open directory,
// with openat2(2) and RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
// RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV: a symlink anywhere in a path
// (to a file, to a directory, dangling, to /proc/self/root) or a mount
// point fails the call with an error, and is never followed. A file is
// written by removing what has its name (unlinkat(2) removes a symlink
// itself, never its target; a directory in the way is an error) and
// creating it anew with O_CREAT|O_EXCL|O_NOFOLLOW, so a write never goes
// through a link the untrusted process made, hard or symbolic. Ownership
// and mode are set on the open file (fchown, fchmod), never by name.
//
// Removal of a whole tree needs nothing of this package: os.RemoveAll
// walks with unlinkat and openat(O_NOFOLLOW|O_DIRECTORY) from its parent's
// descriptor and removes a symlink, never what it points to.
//
// On kernels without openat2 (before Linux 5.6) each component is opened
// with openat(2) and O_NOFOLLOW, which for one component is the same
// except that a mount point is crossed; only a privileged process can
// make one.
package safefs

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"strings"

	"golang.org/x/sys/unix"
)

// Sentinel errors: a path this package refuses to resolve. Each is wrapped
// with the path.
var (
	// ErrSymlink: a component of the path is a symlink.
	ErrSymlink = errors.New("a symlink is in the path")
	// ErrNotDir: a component that must be a directory is not one, or the
	// file to write is a directory.
	ErrNotDir = errors.New("not a directory where one is needed, or a directory where a file is")
	// ErrMount: a component is a mount point.
	ErrMount = errors.New("a mount point is in the path")
	// ErrPath: the path is not relative, clean and slash-separated.
	ErrPath = errors.New("not a relative, clean path")
)

// Owner is who a created file or directory belongs to; -1 keeps the
// creator's id.
type Owner struct{ UID, GID int }

// Creator is the Owner that keeps the creating process's ids.
var Creator = Owner{-1, -1}

// resolve are the openat2 resolve flags of every open.
const resolve = unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS | unix.RESOLVE_NO_XDEV

// Root is an open directory under which files are made.
type Root struct {
	fd int
}

// Open opens dir (which must not itself be a symlink) as a Root.
func Open(dir string) (*Root, error) {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: dir, Err: classify(err)}
	}
	return &Root{fd: fd}, nil
}

// Close closes the directory.
func (r *Root) Close() error { return unix.Close(r.fd) }

// MkdirAll makes directory rel and its missing parents under r, each new
// one with mode perm and owned by own.
func (r *Root) MkdirAll(rel string, perm os.FileMode, own Owner) error {
	fd, err := r.mkdirAll(rel, perm, own)
	if err != nil {
		return err
	}
	if fd != r.fd {
		unix.Close(fd)
	}
	return nil
}

// WriteFile writes data to file rel under r, a new file with mode perm
// owned by own: whatever had the name (a file, a symlink) is removed
// first. Missing parent directories are made as MkdirAll does, with mode
// 0755.
func (r *Root) WriteFile(rel string, data []byte, perm os.FileMode, own Owner) error {
	if !validPath(rel) {
		return r.pathErr("write", rel, ErrPath)
	}
	dir, base := path.Split(rel)
	parent := r.fd
	if dir != "" {
		fd, err := r.mkdirAll(strings.TrimSuffix(dir, "/"), 0o755, own)
		if err != nil {
			return err
		}
		parent = fd
		defer unix.Close(fd)
	}
	var fd int
	for try := 0; ; try++ {
		if err := unix.Unlinkat(parent, base, 0); err != nil && err != unix.ENOENT {
			return r.pathErr("write", rel, classify(err))
		}
		var err error
		fd, err = openBeneath(parent, base, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL, uint32(perm.Perm()))
		if err == unix.EEXIST && try < 3 {
			continue // made again between the unlink and the create
		}
		if err != nil {
			return r.pathErr("write", rel, classify(err))
		}
		break
	}
	f := os.NewFile(uintptr(fd), rel)
	err := setOwner(fd, perm, own)
	if err == nil {
		_, err = f.Write(data)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// mkdirAll makes rel's directories and returns the last one open (r.fd
// itself for "").
func (r *Root) mkdirAll(rel string, perm os.FileMode, own Owner) (int, error) {
	if rel == "" || rel == "." {
		return r.fd, nil
	}
	if !validPath(rel) {
		return -1, r.pathErr("mkdir", rel, ErrPath)
	}
	cur := r.fd
	done := func() {
		if cur != r.fd {
			unix.Close(cur)
		}
	}
	for _, c := range strings.Split(rel, "/") {
		err := unix.Mkdirat(cur, c, uint32(perm.Perm()))
		created := err == nil
		if err != nil && err != unix.EEXIST {
			done()
			return -1, r.pathErr("mkdir", rel, classify(err))
		}
		fd, err := openBeneath(cur, c, unix.O_RDONLY|unix.O_DIRECTORY, 0)
		if err != nil {
			err = why(cur, c, err)
			done()
			return -1, r.pathErr("mkdir", rel, err)
		}
		done()
		cur = fd
		if created {
			if err := setOwner(fd, perm, own); err != nil {
				done()
				return -1, r.pathErr("mkdir", rel, err)
			}
		}
	}
	return cur, nil
}

// openBeneath opens the one component name of directory dirfd without
// following a symlink or crossing a mount point.
func openBeneath(dirfd int, name string, flags int, mode uint32) (int, error) {
	flags |= unix.O_NOFOLLOW | unix.O_CLOEXEC
	how := unix.OpenHow{Flags: uint64(flags), Resolve: resolve}
	if flags&unix.O_CREAT != 0 {
		how.Mode = uint64(mode)
	}
	for {
		fd, err := unix.Openat2(dirfd, name, &how)
		switch err {
		case unix.EINTR, unix.EAGAIN:
			continue
		case unix.ENOSYS:
			for {
				fd, err = unix.Openat(dirfd, name, flags, mode)
				if err != unix.EINTR {
					return fd, err
				}
			}
		}
		return fd, err
	}
}

// setOwner gives an open file its mode (whatever the umask) and owner.
func setOwner(fd int, perm os.FileMode, own Owner) error {
	if own.UID >= 0 || own.GID >= 0 {
		if err := unix.Fchown(fd, own.UID, own.GID); err != nil {
			return fmt.Errorf("chown: %w", err)
		}
	}
	if err := unix.Fchmod(fd, uint32(perm.Perm())); err != nil {
		return fmt.Errorf("chmod: %w", err)
	}
	return nil
}

// validPath: relative, slash-separated, no empty, "." or ".." component.
func validPath(p string) bool {
	return p != "." && fs.ValidPath(p) && !strings.ContainsRune(p, 0)
}

// why says why name in dirfd did not open as a directory: with
// O_DIRECTORY, a symlink gives ENOTDIR rather than ELOOP.
func why(dirfd int, name string, err error) error {
	var st unix.Stat_t
	if (err == unix.ENOTDIR || err == unix.ELOOP) &&
		unix.Fstatat(dirfd, name, &st, unix.AT_SYMLINK_NOFOLLOW) == nil && st.Mode&unix.S_IFMT == unix.S_IFLNK {
		return ErrSymlink
	}
	return classify(err)
}

// classify maps the errnos of a refused resolution to this package's
// errors, keeping the others.
func classify(err error) error {
	switch err {
	case unix.ELOOP:
		return ErrSymlink
	case unix.ENOTDIR, unix.EISDIR:
		return ErrNotDir
	case unix.EXDEV:
		return ErrMount
	}
	return err
}

// pathErr names the path relative to the root: the root's own place
// (a host path) is none of the untrusted side's business.
func (r *Root) pathErr(op, rel string, err error) error {
	return &fs.PathError{Op: op, Path: rel, Err: err}
}
