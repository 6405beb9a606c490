package cli

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/bai-sh/bai/pkg/events"
)

// healthCommand is `bai admin health`: every service instance, agent and
// stream with its state; the exit code is ExitFailure when something is
// unhealthy.
func (r *runner) healthCommand() *cli.Command {
	return &cli.Command{
		Name:  "health",
		Usage: "every service, agent and stream with its state (admin only); exits 1 when something is unhealthy",
		Flags: globalFlags(),
		Action: func(c *cli.Context) error {
			if _, err := argsBetween(c, 0, 0, ""); err != nil {
				return err
			}
			out, err := outputFormat(c)
			if err != nil {
				return err
			}
			cl, err := r.connect(c)
			if err != nil {
				return err
			}
			defer cl.Close()
			h, err := cl.Health(c.Context)
			if err != nil {
				return err
			}
			if out == "json" {
				err = r.printJSON(h)
			} else {
				err = r.printHealth(h)
			}
			if err != nil {
				return err
			}
			if !h.Healthy {
				return exitWith(ExitFailure)
			}
			return nil
		},
	}
}

func (r *runner) printHealth(h *events.HealthResponse) error {
	tw := tabwriter.NewWriter(r.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SERVICE\tID\tSTATE\tVERSION\tUP\tREQUESTS\tERRORS\tSTATUS")
	for _, s := range h.Services {
		up := "-"
		if !s.Started.IsZero() {
			up = h.Time.Sub(s.Started).Truncate(time.Second).String()
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%d\t%s\n", s.Name, s.ID, s.State, cell(s.Version), up, s.Requests, s.Errors, statusWords(s.Status))
	}
	fmt.Fprintln(tw)
	fmt.Fprintln(tw, "AGENT\tSTATE\tHEARTBEAT\tANSWERED")
	for _, a := range h.Agents {
		age := time.Duration(a.HeartbeatAge*float64(time.Second)).Truncate(100*time.Millisecond).String() + " ago"
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", a.ID, a.State, age, yesNo(a.Answered))
	}
	fmt.Fprintln(tw)
	fmt.Fprintln(tw, "STREAM\tSTATE\tMESSAGES\tBYTES\tLEADER\tREPLICAS\tLAG")
	for _, s := range h.Streams {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\t%d\t%d\n", s.Name, s.State, s.Messages, s.Bytes, cell(s.Leader), s.Replicas, s.Lag)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if h.Healthy {
		fmt.Fprintln(r.stdout, "\nhealthy")
		return nil
	}
	fmt.Fprintln(r.stdout, "\nunhealthy:")
	for _, p := range h.Problems {
		fmt.Fprintln(r.stdout, "  - "+p)
	}
	return nil
}

// statusWords is a service's status as k=v words, keys sorted.
func statusWords(m map[string]string) string {
	if len(m) == 0 {
		return "-"
	}
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, k+"="+m[k])
	}
	return strings.Join(parts, " ")
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}
