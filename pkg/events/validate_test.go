package events

import (
	"errors"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"
)

func TestCheckUploadPath(t *testing.T) {
	deep := strings.Repeat("d/", MaxUploadDepth-1) + "f"
	for _, ok := range []string{"a.py", "dir/sub/a.py", ".hidden", "a..b", "café/naïve.txt", "a b", deep, ".bai-run-x"} {
		if err := CheckUploadPath(ok); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	for _, bad := range []string{
		"", "/etc/passwd", "../x", "a/../../x", "a//b", "./a", "a/", "a/.", "..",
		"a\x00b", `a\b`, "a\nb", "a\rb", "a\tb", "x\x7f", "x\u0085y", "\x1b[31m",
		"\xff.py", strings.Repeat("x", MaxUploadPath+1), deep + "/g",
	} {
		if err := CheckUploadPath(bad); !errors.Is(err, ErrInvalid) {
			t.Errorf("%q: %v, want ErrInvalid", bad, err)
		}
	}
}

func TestCheckRunID(t *testing.T) {
	for _, ok := range []string{"r1", "run-2_b", strings.Repeat("x", MaxTokenLen)} {
		if err := CheckRunID(ok); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	for _, bad := range []string{"", "a/b", "../x", "x\n", "x\x00", "a.b", "a b", "*", ">", strings.Repeat("x", MaxTokenLen+1)} {
		if err := CheckRunID(bad); !errors.Is(err, ErrInvalid) {
			t.Errorf("%q: %v, want ErrInvalid", bad, err)
		}
	}
}

// FuzzCheckUploadPath: a path the check takes stays in the directory it
// is joined to and names a file of a bounded depth without control
// characters; the check never panics.
func FuzzCheckUploadPath(f *testing.F) {
	for _, s := range []string{"a.py", "d/e/f", "../x", "a//b", "a\nb", "/abs", ".", "a/./b", "\xff", "x\u2028y"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, p string) {
		if CheckUploadPath(p) != nil {
			return
		}
		if !utf8.ValidString(p) || len(p) == 0 || len(p) > MaxUploadPath || strings.HasPrefix(p, "/") {
			t.Fatalf("took %q", p)
		}
		if strings.IndexFunc(p, unicode.IsControl) >= 0 || strings.ContainsAny(p, "\x00\\") {
			t.Fatalf("took %q with a control character", p)
		}
		parts := strings.Split(p, "/")
		if len(parts) > MaxUploadDepth {
			t.Fatalf("took %q: %d components", p, len(parts))
		}
		for _, c := range parts {
			if c == "" || c == "." || c == ".." || len(c) > MaxUploadName {
				t.Fatalf("took %q: component %q", p, c)
			}
		}
	})
}

// FuzzCheckRunID: a run id the check takes is one path component and one
// subject token.
func FuzzCheckRunID(f *testing.F) {
	for _, s := range []string{"r1", "a/b", "..", "x\n", "a.b", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, id string) {
		if CheckRunID(id) != nil {
			return
		}
		if id == "" || len(id) > MaxTokenLen || strings.ContainsAny(id, "/.\x00\n *>") || id == ".." {
			t.Fatalf("took %q", id)
		}
		if _, err := OutputSubject("AK", "s", id); err != nil {
			t.Fatalf("took %q, not a subject token: %v", id, err)
		}
	})
}
