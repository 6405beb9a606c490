package safefs_test

import (
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bai-sh/bai/services/agent/internal/safefs"
)

// untrusted makes a work directory as a kernel would leave it: files,
// a nested file, a fifo, and symlinks to a secret file and a directory
// outside, dangling, through /proc/self/root and relative upwards, as
// the last component and in the middle of a path.
func untrusted(t *testing.T) (work, outside string) {
	t.Helper()
	outside = t.TempDir()
	if err := os.WriteFile(filepath.Join(outside, "secret"), []byte("SECRET"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(outside, "dir"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(outside, "dir", "inner"), []byte("INNER"), 0o600); err != nil {
		t.Fatal(err)
	}
	work = t.TempDir()
	for name, body := range map[string]string{"a.txt": "hello\n", "sub/deep/b.txt": "nested\n"} {
		p := filepath.Join(work, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o640); err != nil {
			t.Fatal(err)
		}
	}
	for name, target := range map[string]string{
		"tofile":     filepath.Join(outside, "secret"),
		"todir":      filepath.Join(outside, "dir"),
		"dangling":   filepath.Join(outside, "none"),
		"procroot":   "/proc/self/root" + filepath.Join(outside, "secret"),
		"up":         "../../../../../../../../.." + outside,
		"sub/insub":  filepath.Join(outside, "dir"),
		"sub/toself": "deep",
	} {
		if err := os.Symlink(target, filepath.Join(work, name)); err != nil {
			t.Fatal(err)
		}
	}
	if err := syscall.Mkfifo(filepath.Join(work, "fifo"), 0o644); err != nil {
		t.Fatal(err)
	}
	return work, outside
}

// TestReadNeverFollows: OpenFile reads the work directory's regular
// files and refuses every path through or to a symlink, whatever it
// points at, and every non-regular file (a fifo does not block the
// open); nothing outside is ever read.
func TestReadNeverFollows(t *testing.T) {
	work, _ := untrusted(t)
	r, err := safefs.Open(work)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	for rel, want := range map[string]string{"a.txt": "hello\n", "sub/deep/b.txt": "nested\n"} {
		f, err := r.OpenFile(rel)
		if err != nil {
			t.Fatalf("open %s: %v", rel, err)
		}
		data, err := io.ReadAll(f)
		f.Close()
		if err != nil || string(data) != want {
			t.Errorf("read %s: %q %v", rel, data, err)
		}
	}
	for rel, want := range map[string]error{
		"tofile":             safefs.ErrSymlink,
		"todir/inner":        safefs.ErrSymlink,
		"dangling":           safefs.ErrSymlink,
		"procroot":           safefs.ErrSymlink,
		"up/secret":          safefs.ErrSymlink,
		"sub/insub/inner":    safefs.ErrSymlink,
		"sub/toself/b.txt":   safefs.ErrSymlink,
		"sub":                safefs.ErrNotRegular,
		"fifo":               safefs.ErrNotRegular,
		"a.txt/x":            safefs.ErrNotDir,
		"../secret":          safefs.ErrPath,
		"/etc/passwd":        safefs.ErrPath,
		"sub/../a.txt":       safefs.ErrPath,
		"missing":            fs.ErrNotExist,
		"missing/deep/x.txt": fs.ErrNotExist,
	} {
		done := make(chan error, 1)
		go func() {
			f, err := r.OpenFile(rel)
			if err == nil {
				f.Close()
			}
			done <- err
		}()
		select {
		case err := <-done:
			if !errors.Is(err, want) {
				t.Errorf("open %s: %v, want %v", rel, err, want)
			}
			if err != nil && strings.Contains(err.Error(), work) {
				t.Errorf("open %s: the error names the host path: %v", rel, err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("open %s blocked", rel)
		}
	}
}

// TestReadDirShowsLinksAsLinks: a listing describes each entry as
// itself (a symlink with its target, never what it points to), sorted;
// listing through a symlink is refused; max cuts the listing and says so.
func TestReadDirShowsLinksAsLinks(t *testing.T) {
	work, outside := untrusted(t)
	r, err := safefs.Open(work)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	ents, more, err := r.ReadDir("", 0)
	if err != nil || more {
		t.Fatalf("readdir: %v %v", err, more)
	}
	var names []string
	got := map[string]safefs.Entry{}
	for _, e := range ents {
		names = append(names, e.Name)
		got[e.Name] = e
	}
	if strings.Join(names, " ") != "a.txt dangling fifo procroot sub todir tofile up" {
		t.Fatalf("names %v", names)
	}
	if e := got["a.txt"]; !e.Mode.IsRegular() || e.Mode.Perm() != 0o640 || e.Size != 6 || e.ModTime.IsZero() || e.Target != "" {
		t.Errorf("a.txt: %+v", e)
	}
	if e := got["sub"]; !e.Mode.IsDir() {
		t.Errorf("sub: %+v", e)
	}
	if e := got["fifo"]; e.Mode&fs.ModeNamedPipe == 0 {
		t.Errorf("fifo: %+v", e)
	}
	for name, target := range map[string]string{
		"tofile": filepath.Join(outside, "secret"), "todir": filepath.Join(outside, "dir"),
		"dangling": filepath.Join(outside, "none"), "procroot": "/proc/self/root" + filepath.Join(outside, "secret"),
	} {
		e := got[name]
		// Lstat's size of a link is its target's length, not the
		// secret's 6 bytes or the directory's.
		if e.Mode&fs.ModeSymlink == 0 || e.Target != target || e.Size != int64(len(target)) {
			t.Errorf("%s: %+v, want a symlink to %s", name, e, target)
		}
	}
	sub, _, err := r.ReadDir("sub", 0)
	if err != nil || len(sub) != 3 || sub[0].Name != "deep" || sub[1].Name != "insub" || sub[1].Mode&fs.ModeSymlink == 0 {
		t.Errorf("readdir sub: %+v %v", sub, err)
	}
	for rel, want := range map[string]error{
		"todir": safefs.ErrSymlink, "up": safefs.ErrSymlink, "sub/insub": safefs.ErrSymlink,
		"sub/toself": safefs.ErrSymlink, "a.txt": safefs.ErrNotDir, "../": safefs.ErrPath, "missing": fs.ErrNotExist,
	} {
		if _, _, err := r.ReadDir(rel, 0); !errors.Is(err, want) {
			t.Errorf("readdir %s: %v, want %v", rel, err, want)
		}
	}
	two, more, err := r.ReadDir("", 2)
	if err != nil || !more || len(two) != 2 {
		t.Errorf("readdir max 2: %d entries, more %v, %v", len(two), more, err)
	}
	for rel, want := range map[string]fs.FileMode{"tofile": fs.ModeSymlink, "sub/deep": fs.ModeDir, "sub/deep/b.txt": 0, "": fs.ModeDir} {
		e, err := r.Lstat(rel)
		if err != nil || e.Mode.Type() != want {
			t.Errorf("lstat %s: %+v %v, want type %v", rel, e, err, want)
		}
	}
	if _, err := r.Lstat("todir/inner"); !errors.Is(err, safefs.ErrSymlink) {
		t.Errorf("lstat through a link: %v", err)
	}
}
