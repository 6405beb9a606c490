package safefs_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"

	"github.com/bai-sh/bai/services/agent/internal/safefs"
)

// snapshot lists every file under dir with its mode, owner and content.
func snapshot(t *testing.T, dir string) string {
	t.Helper()
	var out []string
	err := filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		st := fi.Sys().(*syscall.Stat_t)
		line := fmt.Sprint(p, " ", fi.Mode(), " ", st.Uid, ":", st.Gid)
		if fi.Mode().IsRegular() {
			data, _ := os.ReadFile(p)
			line += " " + string(data)
		}
		out = append(out, line)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(out)
	return strings.Join(out, "\n")
}

// TestWriteNeverFollows: whatever symlink the untrusted side put in the
// way (to a file or a directory outside, dangling, to /proc/self/root, as
// the last component or in the middle), a write or mkdir under the root
// either happens inside it or fails; nothing outside changes.
func TestWriteNeverFollows(t *testing.T) {
	outside := t.TempDir()
	secret := filepath.Join(outside, "secret")
	if err := os.WriteFile(secret, []byte("SECRET"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(outside, "dir"), 0o700); err != nil {
		t.Fatal(err)
	}
	before := snapshot(t, outside)

	for name, target := range map[string]string{
		"file":           secret,
		"dir":            filepath.Join(outside, "dir"),
		"dangling":       filepath.Join(outside, "new"),
		"proc-self-root": "/proc/self/root" + outside,
		"relative-up":    "../../" + filepath.Base(outside),
	} {
		t.Run(name, func(t *testing.T) {
			work := t.TempDir()
			for _, l := range []string{"link", "d/link", ".bai-run-x"} {
				if err := os.MkdirAll(filepath.Dir(filepath.Join(work, l)), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.Symlink(target, filepath.Join(work, l)); err != nil {
					t.Fatal(err)
				}
			}
			r, err := safefs.Open(work)
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			// The last component: replaced by a file of its own.
			for _, p := range []string{"link", "d/link", ".bai-run-x"} {
				if err := r.WriteFile(p, []byte("MINE"), 0o644, safefs.Creator); err != nil {
					t.Errorf("write %s: %v", p, err)
				}
				fi, err := os.Lstat(filepath.Join(work, p))
				if err != nil || !fi.Mode().IsRegular() {
					t.Errorf("%s: %v %v, want a regular file", p, fi, err)
				}
			}
			// Restore the links, then use them as directories.
			for _, l := range []string{"link", "d/link"} {
				os.Remove(filepath.Join(work, l))
				if err := os.Symlink(target, filepath.Join(work, l)); err != nil {
					t.Fatal(err)
				}
			}
			for _, p := range []string{"link/x", "d/link/x", "link/sub/x", "d/link/sub/deeper/x"} {
				if err := r.WriteFile(p, []byte("MINE"), 0o644, safefs.Creator); !errors.Is(err, safefs.ErrSymlink) {
					t.Errorf("write %s through a symlink: %v, want ErrSymlink", p, err)
				}
				if err := r.MkdirAll(filepath.Dir(p), 0o755, safefs.Creator); !errors.Is(err, safefs.ErrSymlink) {
					t.Errorf("mkdir %s through a symlink: %v, want ErrSymlink", filepath.Dir(p), err)
				}
			}
			if after := snapshot(t, outside); after != before {
				t.Errorf("outside changed:\n%s\nwas\n%s", after, before)
			}
		})
	}
}

// TestWriteFile: files and directories are made with the mode and owner
// asked, a file in the way is replaced (never written through: a hard link
// to it keeps its content), a directory in the way is an error, bad paths
// are refused.
func TestWriteFile(t *testing.T) {
	work := t.TempDir()
	r, err := safefs.Open(work)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	own := safefs.Owner{UID: 12345, GID: 12346}
	if os.Geteuid() != 0 {
		own = safefs.Creator
	}
	if err := r.WriteFile("a/b/c.txt", []byte("one"), 0o640, own); err != nil {
		t.Fatal(err)
	}
	for p, mode := range map[string]os.FileMode{"a": os.ModeDir | 0o755, "a/b": os.ModeDir | 0o755, "a/b/c.txt": 0o640} {
		fi, err := os.Lstat(filepath.Join(work, p))
		if err != nil || fi.Mode() != mode {
			t.Errorf("%s: %v %v, want mode %v", p, fi, err, mode)
			continue
		}
		if st := fi.Sys().(*syscall.Stat_t); own.UID >= 0 && (int(st.Uid) != own.UID || int(st.Gid) != own.GID) {
			t.Errorf("%s: owner %d:%d, want %d:%d", p, st.Uid, st.Gid, own.UID, own.GID)
		}
	}
	// A hard link the other side made to the file keeps the old content.
	if err := os.Link(filepath.Join(work, "a/b/c.txt"), filepath.Join(work, "hard")); err != nil {
		t.Fatal(err)
	}
	if err := r.WriteFile("a/b/c.txt", []byte("two"), 0o644, own); err != nil {
		t.Fatal(err)
	}
	if data, _ := os.ReadFile(filepath.Join(work, "hard")); string(data) != "one" {
		t.Errorf("hard link now holds %q", data)
	}
	if data, _ := os.ReadFile(filepath.Join(work, "a/b/c.txt")); string(data) != "two" {
		t.Errorf("file holds %q", data)
	}
	if err := r.WriteFile("a/b", nil, 0o644, own); !errors.Is(err, safefs.ErrNotDir) {
		t.Errorf("write over a directory: %v", err)
	}
	if err := r.WriteFile("a/b/c.txt/d", nil, 0o644, own); !errors.Is(err, safefs.ErrNotDir) {
		t.Errorf("write under a file: %v", err)
	}
	for _, bad := range []string{"", ".", "/etc/x", "../x", "a/../../x", "a//b", "a/", "./a", "a\x00"} {
		if err := r.WriteFile(bad, nil, 0o644, own); !errors.Is(err, safefs.ErrPath) {
			t.Errorf("write %q: %v, want ErrPath", bad, err)
		}
	}
	if _, err := safefs.Open(filepath.Join(work, "hard")); err == nil {
		t.Error("opened a file as a root")
	}
	link := filepath.Join(t.TempDir(), "l")
	if err := os.Symlink(work, link); err != nil {
		t.Fatal(err)
	}
	if _, err := safefs.Open(link); err == nil {
		t.Error("opened a symlink as a root")
	}
}

// TestMountPointRefused: a mount point under the root is not crossed.
func TestMountPointRefused(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("SKIP: mounting needs root")
	}
	work := t.TempDir()
	mnt := filepath.Join(work, "m")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount("tmpfs", mnt, "tmpfs", 0, "size=64k"); err != nil {
		t.Skipf("SKIP: cannot mount a tmpfs here: %v", err)
	}
	t.Cleanup(func() { syscall.Unmount(mnt, syscall.MNT_DETACH) })
	r, err := safefs.Open(work)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if err := r.WriteFile("m/x", []byte("x"), 0o644, safefs.Creator); !errors.Is(err, safefs.ErrMount) {
		t.Errorf("write across a mount point: %v, want ErrMount", err)
	}
	if ents, _ := os.ReadDir(mnt); len(ents) != 0 {
		t.Errorf("mount holds %v", ents)
	}
}
