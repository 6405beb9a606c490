package cli

import (
	"bytes"
	"fmt"
	"os"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestFitColumns(t *testing.T) {
	names := []string{"name", "access_key", "id", "image", "status", "status_info", "main_kernel_id"}
	rows := [][]string{
		{"Name", "Owner Access Key", "Session ID", "Image", "Status", "Status Info", "Main Kernel ID"},
		{"my-session", "AKIA0123456789ABCDEF", "0123456789abcdef", "python:3.11-debian12", "RUNNING", "-", "fedcba9876543210"},
	}
	// Natural widths: 10 20 16 20 7 11 16 = 100, gaps 12: 112.
	tests := []struct {
		width int
		want  []int
	}{
		{0, []int{-1, -1, -1, -1, -1, -1, -1}},   // not a terminal: all
		{112, []int{-1, -1, -1, -1, -1, -1, -1}}, // fits exactly
		{111, []int{-1, -1, -1, -1, -1, -1, 0}},  // the least useful goes first
		{80, []int{-1, 0, -1, -1, -1, -1, 0}},    // name, id, status, then status info and image
		{72, []int{-1, 0, -1, -1, -1, -1, 0}},    // 37 kept, +13 status info, +22 image: exactly
		{60, []int{-1, 0, -1, 0, -1, -1, 0}},     // status info fits, image does not
		{50, []int{-1, 0, -1, 0, -1, -1, 0}},     // status info fits exactly
		{49, []int{-1, 0, -1, 0, -1, 0, 0}},      // nothing but the kept ones
		{37, []int{-1, 0, -1, 0, -1, 0, 0}},      // only the kept ones
		{35, []int{8, 0, -1, 0, -1, 0, 0}},       // 37 > 35: the name cut by 2, to its minimum of 8
		{20, []int{8, 0, -1, 0, -1, 0, 0}},       // never shorter than 8: the line overflows
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.width), func(t *testing.T) {
			got := fitColumns(names, rows, tt.width)
			if fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Fatalf("fitColumns(width %d) = %v, want %v", tt.width, got, tt.want)
			}
		})
	}
}

func TestCut(t *testing.T) {
	for _, tt := range []struct {
		s    string
		w    int
		want string
	}{{"session", -1, "session"}, {"session", 7, "session"}, {"session", 5, "sess…"}, {"séssion", 3, "sé…"}, {"ab", 1, "a"}, {"ab", 0, ""}} {
		if got := cut(tt.s, tt.w); got != tt.want {
			t.Errorf("cut(%q, %d) = %q, want %q", tt.s, tt.w, got, tt.want)
		}
	}
}

// TestTableFitsWidth: every line of a table fitted to a width is at most
// that wide while the kept columns fit, and keeps Name, Session ID and
// Status.
func TestTableFitsWidth(t *testing.T) {
	sessions := sampleSessions()
	for _, width := range []int{200, 120, 100, 80, 60} {
		var buf bytes.Buffer
		if err := writeTableFit(&buf, sessionColumns, sessions, true, width); err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n")
		for _, l := range lines {
			if n := utf8.RuneCountInString(strings.TrimRight(l, " ")); n > width {
				t.Errorf("width %d: a line of %d: %q", width, n, l)
			}
		}
		for _, title := range []string{"Name", "Session ID", "Status"} {
			if !strings.Contains(lines[0], title) {
				t.Errorf("width %d: no %s column: %q", width, title, lines[0])
			}
		}
	}
}

func TestPagerSelection(t *testing.T) {
	for _, tt := range []struct {
		bai, pager *string
		want       string
	}{
		{nil, nil, DefaultPager},
		{nil, ptr("more"), "more"},
		{ptr("most"), ptr("more"), "most"},
		{ptr(""), ptr("more"), ""},
		{nil, ptr(""), ""},
	} {
		for name, v := range map[string]*string{"BAI_PAGER": tt.bai, "PAGER": tt.pager} {
			if v == nil {
				t.Setenv(name, "")
				os.Unsetenv(name)
			} else {
				t.Setenv(name, *v)
			}
		}
		if got := osPager(); got != tt.want {
			t.Errorf("BAI_PAGER %v PAGER %v: pager %q, want %q", tt.bai, tt.pager, got, tt.want)
		}
	}
	for _, p := range []string{"", "cat"} {
		if usePager(p) {
			t.Errorf("usePager(%q) = true", p)
		}
	}

	out := []byte("a\nb\n")
	for _, tt := range []struct {
		pager, want string
	}{
		{"cat", "a\nb\n"},
		{"", "a\nb\n"},
		{"sed 's/^/| /'", "| a\n| b\n"},
		{"echo LESS=$LESS", "LESS=FRX\n"},
		{"/nonexistent/pager", "a\nb\n"}, // the shell says it is not found; the output goes straight
	} {
		var stdout, stderr bytes.Buffer
		r := &runner{env: Env{Pager: tt.pager}, stdout: &stdout, stderr: &stderr}
		t.Setenv("LESS", "")
		os.Unsetenv("LESS")
		if err := r.page(out); err != nil {
			t.Fatal(err)
		}
		if tt.pager == "/nonexistent/pager" && !strings.Contains(stderr.String(), "not found") {
			t.Errorf("a missing pager: stderr %q", stderr.String())
		}
		if stdout.String() != tt.want {
			t.Errorf("pager %q: %q, want %q", tt.pager, stdout.String(), tt.want)
		}
	}
}

func ptr(s string) *string { return &s }
