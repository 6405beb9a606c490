package safefs

import (
	"errors"
	"io"
	"io/fs"
	"os"
	"path"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// The read side: files and listings of a directory an untrusted process
// writes, read by a privileged one, resolved as the write side resolves
// them (every component from the root's descriptor, openat2 with
// RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS |
// RESOLVE_NO_XDEV): a symlink anywhere in the path is an error, never
// followed; a listing shows a symlink as itself (lstat) with its target
// (readlinkat), never what it points to.

// ErrNotRegular: the file to read is a directory, a fifo, a socket or a
// device.
var ErrNotRegular = errors.New("not a regular file")

// Entry is one directory entry as lstat(2) sees it.
type Entry struct {
	Name    string
	Mode    fs.FileMode // type bits and permissions
	Size    int64
	ModTime time.Time
	// Target is a symlink's content, read with readlinkat, never
	// followed; empty for anything else.
	Target string
}

// OpenFile opens the regular file rel under r for reading. A symlink
// anywhere in rel (the file itself included) fails with ErrSymlink;
// anything but a regular file with ErrNotRegular. The file is opened
// with O_NONBLOCK (a fifo swapped in after the check does not block the
// open) and checked again on its descriptor.
func (r *Root) OpenFile(rel string) (*os.File, error) {
	if !validPath(rel) {
		return nil, r.pathErr("open", rel, ErrPath)
	}
	dir, base := path.Split(rel)
	parent, err := r.openDir(strings.TrimSuffix(dir, "/"), rel)
	if err != nil {
		return nil, err
	}
	defer r.closeDir(parent)
	var st unix.Stat_t
	if err := unix.Fstatat(parent, base, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return nil, r.pathErr("open", rel, classify(err))
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
	case unix.S_IFLNK:
		return nil, r.pathErr("open", rel, ErrSymlink)
	default:
		return nil, r.pathErr("open", rel, ErrNotRegular)
	}
	fd, err := openBeneath(parent, base, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_NOCTTY, 0)
	if err != nil {
		return nil, r.pathErr("open", rel, classify(err))
	}
	if err := unix.Fstat(fd, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFREG {
		unix.Close(fd)
		if err == nil {
			err = ErrNotRegular
		}
		return nil, r.pathErr("open", rel, err)
	}
	return os.NewFile(uintptr(fd), rel), nil
}

// Lstat describes rel under r without following it: a symlink at rel is
// described as itself; a symlink before it fails with ErrSymlink. "" is
// the root itself.
func (r *Root) Lstat(rel string) (Entry, error) {
	if rel == "" || rel == "." {
		var st unix.Stat_t
		if err := unix.Fstat(r.fd, &st); err != nil {
			return Entry{}, r.pathErr("lstat", ".", err)
		}
		return entry(".", &st, ""), nil
	}
	if !validPath(rel) {
		return Entry{}, r.pathErr("lstat", rel, ErrPath)
	}
	dir, base := path.Split(rel)
	parent, err := r.openDir(strings.TrimSuffix(dir, "/"), rel)
	if err != nil {
		return Entry{}, err
	}
	defer r.closeDir(parent)
	e, err := lstatAt(parent, base)
	if err != nil {
		return Entry{}, r.pathErr("lstat", rel, err)
	}
	return e, nil
}

// ReadDir lists directory rel under r ("" is the root itself), sorted by
// name, each entry as Lstat describes it. It lists at most max entries
// (max <= 0: all) and reports whether there were more. A symlink
// anywhere in rel fails with ErrSymlink; a non-directory with ErrNotDir.
func (r *Root) ReadDir(rel string, max int) ([]Entry, bool, error) {
	if rel == "." {
		rel = ""
	}
	if rel != "" && !validPath(rel) {
		return nil, false, r.pathErr("readdir", rel, ErrPath)
	}
	dfd, err := r.openDir(rel, rel)
	if err != nil {
		return nil, false, err
	}
	// The listing reads its own descriptor (getdents moves its offset);
	// entries are looked up from it by name, never by a host path.
	lfd, err := unix.Openat(dfd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	r.closeDir(dfd)
	if err != nil {
		return nil, false, r.pathErr("readdir", rel, classify(err))
	}
	d := os.NewFile(uintptr(lfd), rel)
	defer d.Close()
	n := -1
	if max > 0 {
		n = max + 1
	}
	names, err := d.Readdirnames(n)
	if err != nil && err != io.EOF {
		return nil, false, r.pathErr("readdir", rel, err)
	}
	more := max > 0 && len(names) > max
	if more {
		names = names[:max]
	}
	slices.Sort(names)
	out := make([]Entry, 0, len(names))
	for _, name := range names {
		e, err := lstatAt(lfd, name)
		if errors.Is(err, unix.ENOENT) {
			continue // removed while listed
		}
		if err != nil {
			return nil, false, r.pathErr("readdir", path.Join(rel, name), err)
		}
		out = append(out, e)
	}
	return out, more, nil
}

// openDir opens directory rel ("" is the root: returned as is) one
// component at a time; rel names the whole path for errors.
func (r *Root) openDir(dir, rel string) (int, error) {
	if dir == "" {
		return r.fd, nil
	}
	cur := r.fd
	for _, c := range strings.Split(dir, "/") {
		fd, err := openBeneath(cur, c, unix.O_RDONLY|unix.O_DIRECTORY, 0)
		if err != nil {
			err = why(cur, c, err)
		}
		r.closeDir(cur)
		if err != nil {
			return -1, r.pathErr("open", rel, err)
		}
		cur = fd
	}
	return cur, nil
}

// closeDir closes a descriptor openDir returned, never the root's.
func (r *Root) closeDir(fd int) {
	if fd != r.fd && fd >= 0 {
		unix.Close(fd)
	}
}

// lstatAt describes name in directory dirfd without following it.
func lstatAt(dirfd int, name string) (Entry, error) {
	var st unix.Stat_t
	if err := unix.Fstatat(dirfd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return Entry{}, err
	}
	target := ""
	if st.Mode&unix.S_IFMT == unix.S_IFLNK {
		buf := make([]byte, unix.PathMax)
		n, err := unix.Readlinkat(dirfd, name, buf)
		if err != nil {
			return Entry{}, err
		}
		target = string(buf[:n])
	}
	return entry(name, &st, target), nil
}

// entry is an Entry of a stat result.
func entry(name string, st *unix.Stat_t, target string) Entry {
	return Entry{
		Name:    name,
		Mode:    fileMode(st.Mode),
		Size:    st.Size,
		ModTime: time.Unix(st.Mtim.Unix()).UTC(),
		Target:  target,
	}
}

// fileMode converts a stat mode to an fs.FileMode, as os.Lstat does.
func fileMode(m uint32) fs.FileMode {
	mode := fs.FileMode(m & 0o777)
	switch m & unix.S_IFMT {
	case unix.S_IFBLK:
		mode |= fs.ModeDevice
	case unix.S_IFCHR:
		mode |= fs.ModeDevice | fs.ModeCharDevice
	case unix.S_IFDIR:
		mode |= fs.ModeDir
	case unix.S_IFIFO:
		mode |= fs.ModeNamedPipe
	case unix.S_IFLNK:
		mode |= fs.ModeSymlink
	case unix.S_IFSOCK:
		mode |= fs.ModeSocket
	}
	if m&unix.S_ISGID != 0 {
		mode |= fs.ModeSetgid
	}
	if m&unix.S_ISUID != 0 {
		mode |= fs.ModeSetuid
	}
	if m&unix.S_ISVTX != 0 {
		mode |= fs.ModeSticky
	}
	return mode
}
