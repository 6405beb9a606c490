package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestFilesOutBadArgs: paths out of the work directory, duplicates, too
// few arguments and an existing local file are refused before any
// connection (noServer fails the test's command otherwise), with exit 4
// or 2, and nothing is written under --dest.
func TestFilesOutBadArgs(t *testing.T) {
	dest := t.TempDir()
	if err := os.WriteFile(filepath.Join(dest, "have.txt"), []byte("mine"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"download", "--dest", dest, "s1", "../x"}, 4, "must be clean"},
		{[]string{"download", "--dest", dest, "s1", "a/../../x"}, 4, "must be clean"},
		{[]string{"download", "--dest", dest, "s1", "/etc/shadow"}, 4, "is absolute"},
		{[]string{"download", "--dest", dest, "s1", "a\x1b[2Jb"}, 4, "control character"},
		{[]string{"download", "--dest", dest, "s1", "a.txt", "./a.txt"}, 4, "given twice"},
		{[]string{"download", "--dest", dest, "s1", "have.txt"}, 4, "--force"},
		{[]string{"download", "s1"}, 2, ""},
		{[]string{"ls", "s1", "../"}, 4, "must be clean"},
		{[]string{"ls", "s1", "/home/work"}, 4, "is absolute"},
		{[]string{"ls", "s1", "a", "b"}, 2, ""},
	} {
		code, _, errOut := run(t, noServer(t), c.args...)
		if code != c.code || !strings.Contains(errOut, c.want) {
			t.Errorf("bai %q: %d %q, want %d %q", c.args, code, errOut, c.code, c.want)
		}
	}
	if got, _ := os.ReadFile(filepath.Join(dest, "have.txt")); string(got) != "mine" {
		t.Errorf("have.txt is now %q", got)
	}
	if ents, _ := os.ReadDir(dest); len(ents) != 1 {
		t.Errorf("dest holds %v", ents)
	}
}

func TestRemotePathCleans(t *testing.T) {
	for in, want := range map[string]string{"./a.txt": "a.txt", "a//b/": "a/b", "a/./b": "a/b", "x/../y": "y"} {
		if got, err := remotePath(in); err != nil || got != want {
			t.Errorf("remotePath(%q) = %q %v, want %q", in, got, err, want)
		}
	}
}

func TestPrintableQuotesWhatATerminalWouldRun(t *testing.T) {
	for in, want := range map[string]string{
		"plain.txt":     "plain.txt",
		"with space":    "with space",
		"\x1b[31mred":   `"\x1b[31mred"`,
		"evil\u202etxt": `"evil\u202etxt"`,
		"new\nline":     `"new\nline"`,
		" lead":         `" lead"`,
		"naïve":         "naïve",
	} {
		if got := printable(in); got != want {
			t.Errorf("printable(%q) = %s, want %s", in, got, want)
		}
	}
}
