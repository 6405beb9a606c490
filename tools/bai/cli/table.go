package cli

import (
	"bytes"
	"os"
	"os/exec"
	"unicode/utf8"

	"golang.org/x/term"
)

// Tables that fit: on a terminal, ps's default and --detail tables keep
// the columns that fit its width, the most useful first (Name, Session ID
// and Status always, the name cut short if even they do not fit); --wide,
// --format and output that is not a terminal print every column in full.

// keptColumns are never dropped.
var keptColumns = map[string]bool{"name": true, "id": true, "status": true}

// columnRank orders the other columns, the most useful first; a column
// not named here comes after them, in table order.
var columnRank = []string{"status_info", "image", "status_changed", "type", "result", "tag",
	"created_at", "occupying_slots", "group_name", "access_key", "main_kernel_id"}

// colGap is the space between two columns.
const colGap = 2

// minName is the narrowest a cut-short name gets.
const minName = 8

// fitColumns chooses the columns of a table of cells (one row per line,
// one cell per column, titles first) that fit width: it returns, for each
// column, the width to cut its cells to, 0 to drop it, -1 to keep it as
// it is. width <= 0 keeps everything.
func fitColumns(names []string, rows [][]string, width int) []int {
	n := len(names)
	out := make([]int, n)
	natural := make([]int, n)
	for _, row := range rows {
		for j, c := range row {
			natural[j] = max(natural[j], utf8.RuneCountInString(c))
		}
	}
	total := 0
	for j := range names {
		out[j] = -1
		total += natural[j]
	}
	total += colGap * max(n-1, 0)
	if width <= 0 || total <= width {
		return out
	}
	// The kept columns first, then the others by rank while they fit.
	used, count := 0, 0
	add := func(j int) {
		if count > 0 {
			used += colGap
		}
		used += natural[j]
		count++
	}
	rank := make(map[string]int, len(columnRank))
	for i, name := range columnRank {
		rank[name] = i
	}
	var others []int
	for j, name := range names {
		if keptColumns[name] {
			add(j)
			continue
		}
		out[j] = 0
		others = append(others, j)
	}
	// Stable: ranked ones by rank, the rest in table order.
	order := make([]int, 0, len(others))
	for _, name := range columnRank {
		for _, j := range others {
			if names[j] == name {
				order = append(order, j)
			}
		}
	}
	for _, j := range others {
		if _, ok := rank[names[j]]; !ok {
			order = append(order, j)
		}
	}
	for _, j := range order {
		extra := natural[j]
		if count > 0 {
			extra += colGap
		}
		if used+extra <= width {
			add(j)
			out[j] = -1
		}
	}
	if used > width {
		// Even the kept columns are too wide: cut the name short.
		for j, name := range names {
			if name == "name" {
				out[j] = max(natural[j]-(used-width), minName)
			}
		}
	}
	return out
}

// cut shortens s to w runes, the last one an ellipsis.
func cut(s string, w int) string {
	if w < 0 || utf8.RuneCountInString(s) <= w {
		return s
	}
	if w <= 1 {
		return string([]rune(s)[:max(w, 0)])
	}
	return string([]rune(s)[:w-1]) + "…"
}

// width is the terminal's width when stdout is one (Env.Width for
// tests), else 0.
func (r *runner) width() int {
	if r.env.Width > 0 {
		return r.env.Width
	}
	f, ok := r.stdout.(*os.File)
	if !ok {
		return 0
	}
	w, _, err := term.GetSize(int(f.Fd()))
	if err != nil {
		return 0
	}
	return w
}

// DefaultPager is the pager when neither $BAI_PAGER nor $PAGER is set.
const DefaultPager = "less -FRX"

// usePager reports whether the pager command shows output: an empty one,
// and cat, write straight through (as git does).
func usePager(pager string) bool {
	return pager != "" && pager != "cat"
}

// page writes out through the pager (Env.Pager, run by /bin/sh -c) when
// there is one, else straight to stdout. LESS defaults to FRX, so that
// less quits on output shorter than the screen and keeps colours.
func (r *runner) page(out []byte) error {
	if !usePager(r.env.Pager) {
		_, err := r.stdout.Write(out)
		return err
	}
	cmd := exec.Command("/bin/sh", "-c", r.env.Pager)
	cmd.Stdin = bytes.NewReader(out)
	cmd.Stdout, cmd.Stderr = r.stdout, r.stderr
	cmd.Env = os.Environ()
	if _, ok := os.LookupEnv("LESS"); !ok {
		cmd.Env = append(cmd.Env, "LESS=FRX")
	}
	if err := cmd.Start(); err != nil {
		// No pager to be had: the output still shows.
		_, werr := r.stdout.Write(out)
		return werr
	}
	// The user quitting the pager early is no failure; a pager the
	// shell did not find (127) showed nothing, so the output goes
	// straight.
	_ = cmd.Wait()
	if cmd.ProcessState != nil && cmd.ProcessState.ExitCode() == 127 {
		_, err := r.stdout.Write(out)
		return err
	}
	return nil
}
