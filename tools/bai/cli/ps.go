package cli

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/bai-sh/bai/pkg/events"
)

// pageSize is how many sessions ps --all asks for at a time.
const pageSize = 100

func (r *runner) psCommand(name, usage string) *cli.Command {
	return &cli.Command{
		Name:  name,
		Usage: usage,
		Description: "Lists sessions, most recently changed first: by default the live ones\n" +
			"(PENDING to TERMINATING, and ERROR), the first 10.",
		Flags: append([]cli.Flag{
			&cli.BoolFlag{Name: "running", Usage: "only CREATING, PULLING and RUNNING sessions"},
			&cli.BoolFlag{Name: "dead", Usage: "only CANCELLED and TERMINATED sessions"},
			&cli.StringFlag{Name: "status", Aliases: []string{"s"}, Usage: "only sessions in `STATUS[,STATUS...]`"},
			&cli.IntFlag{Name: "limit", Value: 10, Usage: "list at most `N` sessions"},
			&cli.IntFlag{Name: "offset", Usage: "skip the first `N` sessions"},
			&cli.BoolFlag{Name: "all", Usage: "list every matching session (no limit)"},
			&cli.BoolFlag{Name: "name-only", Usage: "print only the names"},
			&cli.StringFlag{Name: "access-key", Usage: "list the sessions of access key `AK` (admins only)"},
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
	limit, offset, all := c.Int("limit"), c.Int("offset"), c.Bool("all")
	switch {
	case limit < 1:
		return invalidf("--limit must be at least 1")
	case offset < 0:
		return invalidf("--offset must not be negative")
	}
	cl, err := r.connect(c)
	if err != nil {
		return err
	}
	defer cl.Close()

	req := events.ListRequest{Statuses: statuses, Limit: limit, Offset: offset, AccessKey: c.String("access-key")}
	if all {
		req.Limit = pageSize
	}
	var list events.ListResponse
	for {
		resp, err := cl.List(c.Context, req)
		if err != nil {
			return err
		}
		list.Sessions = append(list.Sessions, resp.Sessions...)
		list.Total = resp.Total
		req.Offset += len(resp.Sessions)
		if !all || len(resp.Sessions) == 0 || req.Offset >= resp.Total {
			break
		}
	}
	if list.Sessions == nil {
		list.Sessions = []events.SessionInfo{}
	}
	switch {
	case out == "json":
		return r.printJSON(list)
	case c.Bool("name-only"):
		for _, s := range list.Sessions {
			fmt.Fprintln(r.stdout, s.Name)
		}
		return nil
	}
	if len(list.Sessions) == 0 {
		fmt.Fprintln(r.stdout, "There are no matching sessions.")
		return nil
	}
	if err := writeSessionTable(r.stdout, list.Sessions); err != nil {
		return err
	}
	if shown := offset + len(list.Sessions); shown < list.Total {
		fmt.Fprintf(r.stdout, "(%d of %d sessions; use --all or --offset %d for more)\n", len(list.Sessions), list.Total, shown)
	}
	return nil
}

// sessionColumns are ps's default columns, as Backend.AI's.
var sessionColumns = []string{
	"Name", "Session ID", "Project/Group", "Main Kernel ID", "Image", "Type",
	"Status", "Status Info", "Last Updated", "Result",
}

// writeSessionTable prints sessions as ps's table; empty cells read "-".
func writeSessionTable(w io.Writer, sessions []events.SessionInfo) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(sessionColumns, "\t"))
	for _, s := range sessions {
		row := []string{
			s.Name, s.ID, s.Group, s.MainKernelID, s.Image, string(s.Type),
			string(s.Status), s.StatusInfo, formatTime(s.StatusChanged), string(s.Result),
		}
		for i, v := range row {
			row[i] = cell(v)
		}
		fmt.Fprintln(tw, strings.Join(row, "\t"))
	}
	return tw.Flush()
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
