package server

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bai-sh/bai/internal/natstest"
	"github.com/bai-sh/bai/pkg/events"
)

// TestFilesOut: bai download and bai ls against a real server and a real
// kernel. A file, a nested file and one of several chunks come out
// whole; ls lists the work dir and a subdirectory, the kernel's symlinks
// (to a shadow-like host file, to a directory, dangling, through
// /proc/self/root) as symlinks, and a download through any of them is
// refused, as are a fifo and a file past 64 MiB; ".." and absolute paths
// are refused at admission (400); another key finds nothing, an admin
// with --access-key gets the file; nothing is ever written outside
// --dest, and an existing file is kept without --force.
func TestFilesOut(t *testing.T) {
	r := startServerWith(t, Config{AgentCapacity: map[string]string{"cpu": "4", "mem": "4g"}, IdleTimeout: -1})
	a, b := r.newTenant(t, "user", ""), r.newTenant(t, "user", "")
	admin := tenant{r.srv.Credentials().AccessKey, r.srv.Credentials().SecretKey}
	host := t.TempDir()
	shadow := filepath.Join(host, "shadow")
	if err := os.WriteFile(shadow, []byte("SENTINEL root:x:0:0\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	plant := fmt.Sprintf(`import os, hashlib
open("a.txt", "w").write("hello\n")
os.makedirs("sub/deep")
open("sub/deep/b.txt", "w").write("nested\n")
data = os.urandom(1300000)
open("big.bin", "wb").write(data)
os.chmod("big.bin", 0o750)
os.symlink(%q, "toshadow")
os.symlink(%q, "todir")
os.symlink(%q, "dangling")
os.symlink(%q, "procroot")
os.symlink("../../../../../../../../..%s", "sub/up")
os.mkfifo("fifo")
with open("huge.bin", "wb") as f:
    f.truncate(65 << 20)
print(hashlib.sha256(data).hexdigest())
`, shadow, host, filepath.Join(host, "none"), "/proc/self/root"+shadow, host)
	code, out, errOut := r.baiAs(t, a, "run", "--name", "files", "-c", plant, "python")
	if code != 0 {
		t.Fatalf("plant: %d %q %q", code, out, errOut)
	}
	bigSum := strings.TrimSpace(out)
	ac := r.clientAs(t, a)
	info, err := ac.Get(context.Background(), "files")
	if err != nil {
		t.Fatal(err)
	}
	sid := info.ID

	t.Run("download", func(t *testing.T) {
		dest := filepath.Join(t.TempDir(), "out")
		code, out, errOut := r.baiAs(t, a, "download", "--dest", dest, "files", "a.txt", "./sub/deep/b.txt", "big.bin")
		if code != 0 {
			t.Fatalf("download: %d %q %q", code, out, errOut)
		}
		for rel, want := range map[string]string{"a.txt": "hello\n", "sub/deep/b.txt": "nested\n"} {
			if got, err := os.ReadFile(filepath.Join(dest, rel)); err != nil || string(got) != want {
				t.Errorf("%s: %q %v", rel, got, err)
			}
		}
		big, err := os.ReadFile(filepath.Join(dest, "big.bin"))
		sum := sha256.Sum256(big)
		if err != nil || len(big) != 1300000 || hex.EncodeToString(sum[:]) != bigSum {
			t.Errorf("big.bin: %d bytes, %v; sha256 differs from the kernel's", len(big), err)
		}
		if fi, err := os.Stat(filepath.Join(dest, "big.bin")); err != nil || fi.Mode().Perm() != 0o755 {
			t.Errorf("big.bin mode: %v %v", fi.Mode(), err)
		}
		if !strings.Contains(out, "sub/deep/b.txt -> "+filepath.Join(dest, "sub/deep/b.txt")+" (7 bytes)") {
			t.Errorf("download output %q", out)
		}
		// An existing file is kept without --force.
		if err := os.WriteFile(filepath.Join(dest, "a.txt"), []byte("mine"), 0o644); err != nil {
			t.Fatal(err)
		}
		code, _, errOut = r.baiAs(t, a, "download", "--dest", dest, "files", "a.txt")
		if got, _ := os.ReadFile(filepath.Join(dest, "a.txt")); code != 4 || !strings.Contains(errOut, "--force") || string(got) != "mine" {
			t.Errorf("download over a file: %d %q, file now %q", code, errOut, got)
		}
		code, out, errOut = r.baiAs(t, a, "--output", "json", "download", "--force", "--dest", dest, "files", "a.txt")
		var d struct {
			Path string `json:"path"`
			Size int64  `json:"size"`
		}
		if got, _ := os.ReadFile(filepath.Join(dest, "a.txt")); code != 0 || string(got) != "hello\n" ||
			json.Unmarshal([]byte(out), &d) != nil || d.Path != "a.txt" || d.Size != 6 {
			t.Errorf("download --force: %d %q %q, file now %q", code, out, errOut, got)
		}
		if ents, _ := os.ReadDir(dest); len(ents) != 3 {
			t.Errorf("dest holds %v (a temporary file left?)", ents)
		}
	})

	t.Run("ls", func(t *testing.T) {
		out := r.okAs(t, a, "ls", "files")
		for _, want := range []string{
			"NAME", "a.txt", "toshadow -> " + shadow, "todir -> " + host, "dangling -> " + filepath.Join(host, "none"),
			"procroot -> /proc/self/root" + shadow, "fifo", "sub ", "lrwxrwxrwx", "prw-r--r--", "-rwxr-x---",
		} {
			if !strings.Contains(out, want) {
				t.Errorf("ls: no %q in\n%s", want, out)
			}
		}
		if strings.Contains(out, "SENTINEL") {
			t.Error("ls read the sentinel")
		}
		var resp events.FilesResponse
		if err := json.Unmarshal([]byte(r.okAs(t, a, "--output", "json", "ls", "files", "sub")), &resp); err != nil {
			t.Fatal(err)
		}
		if len(resp.Files) != 2 || resp.Files[0].Name != "deep" || resp.Files[0].Type != events.FileDir ||
			resp.Files[1].Name != "up" || resp.Files[1].Type != events.FileSymlink {
			t.Errorf("ls sub: %+v", resp.Files)
		}
		for _, p := range []string{"todir", "sub/up"} { // the link itself
			if out := r.okAs(t, a, "ls", "files", p); !strings.Contains(out, "symlink") || strings.Count(out, "\n") != 2 {
				t.Errorf("ls %s: %q", p, out)
			}
		}
		code, _, errOut := r.baiAs(t, a, "ls", "files", "todir/x")
		if code != 4 || !strings.Contains(errOut, "a symlink is in the path") {
			t.Errorf("ls through a symlink: %d %q", code, errOut)
		}
	})

	t.Run("refused", func(t *testing.T) {
		dest := t.TempDir()
		for path, want := range map[string]string{
			"toshadow":         "a symlink is in the path",
			"todir/shadow":     "a symlink is in the path",
			"dangling":         "a symlink is in the path",
			"procroot":         "a symlink is in the path",
			"sub/up/shadow":    "a symlink is in the path",
			"fifo":             "not a regular file",
			"sub":              "not a regular file",
			"huge.bin":         "too large to download",
			"nothing.txt":      "no such file",
			"../../etc/shadow": "must be clean",
			shadow:             "is absolute",
		} {
			code, out, errOut := r.baiAs(t, a, "download", "--dest", dest, "files", path)
			if code == 0 || !strings.Contains(errOut, want) || strings.Contains(out+errOut, "SENTINEL") {
				t.Errorf("download %s: %d %q %q, want %q", path, code, out, errOut, want)
			}
		}
		if ents, _ := os.ReadDir(dest); len(ents) != 0 {
			t.Errorf("refused downloads left %v", ents)
		}
		// At admission, from any client: 400 and the rule broken.
		for _, p := range []string{"../x", "/etc/shadow", "a/../../x", "sub/./b", "a\nb"} {
			_, err := ac.Download(context.Background(), events.DownloadRequest{SessionID: sid, Path: p})
			if !errors.Is(err, events.ErrInvalid) || events.CodeOf(err) != events.CodeInvalid {
				t.Errorf("download %q at admission: %v, want 400", p, err)
			}
			_, err = ac.Files(context.Background(), events.FilesRequest{SessionID: sid, Path: p})
			if !errors.Is(err, events.ErrInvalid) {
				t.Errorf("ls %q at admission: %v, want 400", p, err)
			}
		}
		if _, err := ac.Download(context.Background(), events.DownloadRequest{SessionID: sid, Path: "a.txt", Offset: -1}); !errors.Is(err, events.ErrInvalid) {
			t.Errorf("negative offset: %v", err)
		}
	})

	t.Run("other keys", func(t *testing.T) {
		bc := r.clientAs(t, b)
		if _, err := bc.Download(context.Background(), events.DownloadRequest{SessionID: sid, Path: "a.txt"}); !errors.Is(err, events.ErrNotFound) {
			t.Errorf("another key's download: %v, want not found", err)
		}
		if _, err := bc.Files(context.Background(), events.FilesRequest{SessionID: sid}); !errors.Is(err, events.ErrNotFound) {
			t.Errorf("another key's ls: %v, want not found", err)
		}
		if _, err := bc.Download(context.Background(), events.DownloadRequest{SessionID: sid, AccessKey: a.ak, Path: "a.txt"}); !errors.Is(err, events.ErrForbidden) {
			t.Errorf("another key naming the owner: %v, want forbidden", err)
		}
		dest := t.TempDir()
		if code, _, _ := r.baiAs(t, b, "download", "--dest", dest, sid, "a.txt"); code == 0 {
			t.Error("another key downloaded")
		}
		code, out, errOut := r.baiAs(t, admin, "download", "--access-key", a.ak, "--dest", dest, sid, "a.txt")
		if got, _ := os.ReadFile(filepath.Join(dest, "a.txt")); code != 0 || string(got) != "hello\n" {
			t.Errorf("admin --access-key: %d %q %q", code, out, errOut)
		}
		if out := r.okAs(t, admin, "ls", "--access-key", a.ak, sid); !strings.Contains(out, "a.txt") {
			t.Errorf("admin ls: %q", out)
		}
	})

	t.Run("dest", func(t *testing.T) {
		// A symlink under --dest that leads out of it: the file is not
		// written there, or anywhere outside.
		dest, outside := t.TempDir(), t.TempDir()
		if err := os.Symlink(outside, filepath.Join(dest, "sub")); err != nil {
			t.Fatal(err)
		}
		code, _, errOut := r.baiAs(t, a, "download", "--dest", dest, "files", "sub/deep/b.txt")
		if code == 0 {
			t.Errorf("download through a symlink out of --dest: exit 0 %q", errOut)
		}
		if ents, _ := os.ReadDir(outside); len(ents) != 0 {
			t.Errorf("written outside --dest: %v", ents)
		}
	})

	// Once the session ends, its files are gone: a clear error.
	r.okAs(t, a, "rm", "files")
	r.waitStatusAs(t, a, sid, events.StatusTerminated)
	if _, err := ac.Download(context.Background(), events.DownloadRequest{SessionID: sid, Path: "a.txt"}); !errors.Is(err, events.ErrConflict) {
		t.Errorf("download after rm: %v, want conflict", err)
	}
}

// okAs runs bai as tn and fails the test unless it exits 0.
func (r *running) okAs(t *testing.T, tn tenant, args ...string) string {
	t.Helper()
	code, out, errOut := r.baiAs(t, tn, args...)
	if code != 0 {
		t.Fatalf("bai %s: exit %d\nstdout %q\nstderr %q", strings.Join(args, " "), code, out, errOut)
	}
	return out
}

// waitStatusAs polls until tn's session ref has status want.
func (r *running) waitStatusAs(t *testing.T, tn tenant, ref string, want events.Status) {
	t.Helper()
	cl := r.clientAs(t, tn)
	natstest.CheckFor(t, 20*time.Second, 10*time.Millisecond, func() error {
		info, err := cl.Get(context.Background(), ref)
		if err != nil {
			return err
		}
		if info.Status != want {
			return fmt.Errorf("session %s is %s, want %s", ref, info.Status, want)
		}
		return nil
	})
}
