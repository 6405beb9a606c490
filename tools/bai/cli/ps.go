package cli

import (
	"bufio"
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
			"(a page at a time on a terminal).\n\nFields for -f: " + fieldNames() + ".",
		Flags: append([]cli.Flag{
			&cli.BoolFlag{Name: "running", Usage: "only CREATING, PULLING and RUNNING sessions"},
			&cli.BoolFlag{Name: "dead", Usage: "only CANCELLED and TERMINATED sessions"},
			&cli.StringFlag{Name: "status", Aliases: []string{"s"}, Usage: "only sessions in `STATUS[,STATUS...]`"},
			&cli.IntFlag{Name: "limit", Value: 10, Usage: "list at most `N` sessions"},
			&cli.IntFlag{Name: "offset", Usage: "skip the first `N` sessions"},
			&cli.BoolFlag{Name: "all", Usage: "list every matching session (on a terminal, --limit at a time)"},
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
	// --all: on a terminal, a page of --limit sessions at a time;
	// otherwise every one, fetched pageSize at a time.
	pager := all && out == "text" && r.terminal(r.stdout) && r.stdin != nil
	if all && !pager {
		req.Limit = pageSize
	}
	var list events.ListResponse
	for page := 0; ; page++ {
		resp, err := cl.List(c.Context, req)
		if err != nil {
			return err
		}
		list.Total, list.Admin = resp.Total, resp.Admin
		req.Offset += len(resp.Sessions)
		more := all && len(resp.Sessions) > 0 && req.Offset < resp.Total
		if pager {
			// A page at a time: print it, then ask for the next.
			cols, _ := psColumns(c, resp.Admin)
			if page == 0 && len(resp.Sessions) == 0 {
				fmt.Fprintln(r.stdout, "There are no matching sessions.")
			}
			if len(resp.Sessions) > 0 {
				if err := writeTable(r.stdout, cols, resp.Sessions, page == 0 && !c.Bool("name-only")); err != nil {
					return err
				}
			}
			if !more || !r.askMore(req.Offset, resp.Total) {
				return nil
			}
			continue
		}
		list.Sessions = append(list.Sessions, resp.Sessions...)
		if !more {
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
	if c.Bool("name-only") {
		for _, s := range list.Sessions {
			fmt.Fprintln(r.stdout, s.Name)
		}
		return nil
	}
	if len(list.Sessions) == 0 {
		fmt.Fprintln(r.stdout, "There are no matching sessions.")
		return nil
	}
	if err := writeTable(r.stdout, cols, list.Sessions, true); err != nil {
		return err
	}
	if shown := offset + len(list.Sessions); shown < list.Total {
		fmt.Fprintf(r.stdout, "(%d of %d sessions; use --all or --offset %d for more)\n", len(list.Sessions), list.Total, shown)
	}
	return nil
}

// askMore prompts on the terminal for the next page.
func (r *runner) askMore(shown, total int) bool {
	fmt.Fprintf(r.stderr, "-- %d of %d; Enter for more, q to stop -- ", shown, total)
	if r.in == nil {
		r.in = bufio.NewReader(r.stdin)
	}
	line, err := r.in.ReadString('\n')
	return err == nil && !strings.HasPrefix(strings.TrimSpace(strings.ToLower(line)), "q")
}

// writeTable prints sessions as a table of cols; empty cells read "-".
func writeTable(w io.Writer, cols []*field, sessions []events.SessionInfo, header bool) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	if header {
		titles := make([]string, len(cols))
		for i, f := range cols {
			titles[i] = f.title
		}
		fmt.Fprintln(tw, strings.Join(titles, "\t"))
	}
	for i := range sessions {
		row := make([]string, len(cols))
		for j, f := range cols {
			row[j] = cell(text(f.value(&sessions[i])))
		}
		fmt.Fprintln(tw, strings.Join(row, "\t"))
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
