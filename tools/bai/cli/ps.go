package cli

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/bai-sh/bai/pkg/events"
)

// pageSize is how many sessions ps --all asks for at a time when it
// prints them all.
const pageSize = 100

func (r *runner) psCommand(name, usage string) *cli.Command {
	return &cli.Command{
		Name:  name,
		Usage: usage,
		Description: "Lists sessions, most recently status-changed first: by default the live ones\n" +
			"(PENDING to TERMINATING, and ERROR), the first 10. --all lists every one\n" +
			"(on a terminal through $BAI_PAGER, else $PAGER, else " + DefaultPager + ").\n" +
			"On a terminal the table keeps the columns that fit its width (Name, Session ID\n" +
			"and Status always); --wide prints them all.\n\nFields for -f: " + fieldNames() + ".",
		Flags: append([]cli.Flag{
			&cli.BoolFlag{Name: "running", Usage: "only CREATING, PULLING and RUNNING sessions"},
			&cli.BoolFlag{Name: "dead", Usage: "only CANCELLED and TERMINATED sessions"},
			&cli.StringFlag{Name: "status", Aliases: []string{"s"}, Usage: "only sessions in `STATUS[,STATUS...]`"},
			&cli.IntFlag{Name: "limit", Value: 10, Usage: "list at most `N` sessions"},
			&cli.IntFlag{Name: "offset", Usage: "skip the first `N` sessions"},
			&cli.BoolFlag{Name: "all", Usage: "list every matching session (on a terminal, through the pager)"},
			&cli.BoolFlag{Name: "wide", Usage: "print every column, however wide the terminal"},
			&cli.BoolFlag{Name: "name-only", Usage: "print only the names"},
			&cli.BoolFlag{Name: "detail", Usage: "print more columns: tag, creation time, occupied slots"},
			&cli.StringFlag{Name: "format", Aliases: []string{"f"}, Usage: "print the fields `FIELD[,FIELD...]`"},
			&cli.StringFlag{Name: "access-key", Usage: "list the sessions of `ACCESS_KEY` (admins only)"},
		}, globalFlags()...),
		Action: r.ps,
	}
}

// listStatuses turns the status flags into the request's filter.
func listStatuses(c *cli.Context) ([]events.Status, error) {
	n := 0
	for _, f := range []string{"running", "dead", "status"} {
		if c.IsSet(f) {
			n++
		}
	}
	if n > 1 {
		return nil, usageErrorf("give at most one of --running, --dead and --status")
	}
	switch {
	case c.Bool("running"):
		return events.RunningListStatuses, nil
	case c.Bool("dead"):
		return events.DeadListStatuses, nil
	case c.IsSet("status"):
		return parseStatuses(c.String("status"))
	}
	return events.DefaultListStatuses, nil
}

// parseStatuses parses a comma-separated list of statuses, in any case.
func parseStatuses(s string) ([]events.Status, error) {
	var out []events.Status
	for _, f := range strings.Split(s, ",") {
		st := events.Status(strings.ToUpper(strings.TrimSpace(f)))
		if !st.Valid() {
			return nil, invalidf("unknown status %q (want one of %s)", strings.TrimSpace(f), statusNames())
		}
		out = append(out, st)
	}
	return out, nil
}

func statusNames() string {
	names := make([]string, len(events.AllStatuses))
	for i, s := range events.AllStatuses {
		names[i] = string(s)
	}
	return strings.Join(names, ", ")
}

// The columns of ps, as the manual page's table.
var (
	defaultColumns = []string{"name", "access_key", "id", "group_name", "main_kernel_id", "image", "type",
		"status", "status_info", "status_changed", "result"}
	detailColumns = []string{"name", "id", "group_name", "main_kernel_id", "image", "type",
		"status", "status_info", "status_changed", "result", "tag", "created_at", "occupying_slots"}
)

// psColumns picks the columns of a listing; admin adds the owner's key
// to the default columns.
func psColumns(c *cli.Context, admin bool) ([]*field, error) {
	n := 0
	for _, f := range []string{"name-only", "detail", "format"} {
		if c.IsSet(f) {
			n++
		}
	}
	if n > 1 {
		return nil, usageErrorf("give at most one of --name-only, --detail and --format")
	}
	switch {
	case c.IsSet("format"):
		return parseFields(c.String("format"))
	case c.Bool("name-only"):
		return mustFields("name"), nil
	case c.Bool("detail"):
		return mustFields(detailColumns...), nil
	}
	cols := mustFields(defaultColumns...)
	if !admin {
		cols = append(cols[:1:1], cols[2:]...)
	}
	return cols, nil
}

// isTerminal reports whether w is a character device (a terminal).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

func (r *runner) ps(c *cli.Context) error {
	if _, err := argsBetween(c, 0, 0, "no arguments"); err != nil {
		return err
	}
	statuses, err := listStatuses(c)
	if err != nil {
		return err
	}
	out, err := outputFormat(c)
	if err != nil {
		return err
	}
	if _, err := psColumns(c, true); err != nil {
		return err
	}
	limit, offset, all := c.Int("limit"), c.Int("offset"), c.Bool("all")
	switch {
	case limit < 1:
		return invalidf("--limit must be at least 1")
	case offset < 0:
		return invalidf("--offset must not be negative")
	}
	ak := c.String("access-key")
	if ak != "" && !events.ValidToken(ak) {
		return invalidf("invalid access key %q", ak)
	}
	cl, err := r.connect(c)
	if err != nil {
		return err
	}
	defer cl.Close()

	req := events.ListRequest{Statuses: statuses, Limit: limit, Offset: offset, AccessKey: ak}
	// --all: every one, fetched pageSize at a time; on a terminal shown
	// through the pager.
	pager := all && out == "text" && r.terminal(r.stdout)
	if all {
		req.Limit = pageSize
	}
	var list events.ListResponse
	for {
		resp, err := cl.List(c.Context, req)
		if err != nil {
			return err
		}
		list.Total, list.Admin = resp.Total, resp.Admin
		req.Offset += len(resp.Sessions)
		list.Sessions = append(list.Sessions, resp.Sessions...)
		if !all || len(resp.Sessions) == 0 || req.Offset >= resp.Total {
			break
		}
	}
	if list.Sessions == nil {
		list.Sessions = []events.SessionInfo{}
	}
	cols, _ := psColumns(c, list.Admin)
	if out == "json" {
		if !c.IsSet("format") {
			return r.printJSON(list)
		}
		rows := make([]map[string]any, len(list.Sessions))
		for i := range list.Sessions {
			rows[i] = make(map[string]any, len(cols))
			for _, f := range cols {
				rows[i][f.name] = f.value(&list.Sessions[i])
			}
		}
		return r.printJSON(map[string]any{"sessions": rows, "total": list.Total})
	}
	var buf bytes.Buffer
	switch {
	case c.Bool("name-only"):
		for _, s := range list.Sessions {
			fmt.Fprintln(&buf, s.Name)
		}
	case len(list.Sessions) == 0:
		fmt.Fprintln(&buf, "There are no matching sessions.")
	default:
		// Fit the terminal, unless the columns were asked for.
		width := 0
		if !c.Bool("wide") && !c.IsSet("format") && r.terminal(r.stdout) {
			width = r.width()
		}
		if err := writeTableFit(&buf, cols, list.Sessions, true, width); err != nil {
			return err
		}
		if shown := offset + len(list.Sessions); shown < list.Total {
			fmt.Fprintf(&buf, "(%d of %d sessions; use --all or --offset %d for more)\n", len(list.Sessions), list.Total, shown)
		}
	}
	if pager {
		return r.page(buf.Bytes())
	}
	_, err = r.stdout.Write(buf.Bytes())
	return err
}

// writeTable prints sessions as a table of cols; empty cells read "-".
func writeTable(w io.Writer, cols []*field, sessions []events.SessionInfo, header bool) error {
	return writeTableFit(w, cols, sessions, header, 0)
}

// writeTableFit is writeTable keeping the columns that fit width (see
// fitColumns); width <= 0 keeps them all.
func writeTableFit(w io.Writer, cols []*field, sessions []events.SessionInfo, header bool, width int) error {
	names := make([]string, len(cols))
	var rows [][]string
	titles := make([]string, len(cols))
	for i, f := range cols {
		names[i], titles[i] = f.name, f.title
	}
	if header {
		rows = append(rows, titles)
	}
	for i := range sessions {
		row := make([]string, len(cols))
		for j, f := range cols {
			row[j] = cell(text(f.value(&sessions[i])))
		}
		rows = append(rows, row)
	}
	fit := fitColumns(names, rows, width)
	tw := tabwriter.NewWriter(w, 0, 0, colGap, ' ', 0)
	line := make([]string, 0, len(cols))
	for _, row := range rows {
		line = line[:0]
		for j, c := range row {
			if fit[j] != 0 {
				line = append(line, cut(c, fit[j]))
			}
		}
		fmt.Fprintln(tw, strings.Join(line, "\t"))
	}
	return tw.Flush()
}

// sessionColumns are ps's default columns for a non-admin.
var sessionColumns = func() []*field {
	cols := mustFields(defaultColumns...)
	return append(cols[:1:1], cols[2:]...)
}()

// writeSessionTable prints sessions as ps's default table.
func writeSessionTable(w io.Writer, sessions []events.SessionInfo) error {
	return writeTable(w, sessionColumns, sessions, true)
}

func cell(v string) string {
	v = strings.Join(strings.Fields(v), " ") // no tabs or newlines in a cell
	if v == "" {
		return "-"
	}
	return v
}

func formatTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.Format(time.RFC3339)
}
