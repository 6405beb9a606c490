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
	"github.com/bai-sh/bai/tools/bai/client"
)

// agentCommand is `bai admin agent list|drain|undrain`.
func (r *runner) agentCommand() *cli.Command {
	return &cli.Command{
		Name:   "agent",
		Usage:  "agent administration (admin only)",
		Action: helpOrUnknown,
		Subcommands: []*cli.Command{
			{
				Name:  "list",
				Usage: "list the agents: capacity, used, sessions, heartbeat age, state",
				Flags: globalFlags(),
				Action: r.adminAction(0, 0, "", func(c *cli.Context, cl *client.Client, _ []string) (any, error) {
					return cl.ListAgents(c.Context)
				}),
			},
			{
				Name:      "drain",
				Usage:     "make agent ID take no new work; its running sessions go on",
				ArgsUsage: "ID",
				Flags:     globalFlags(),
				Action: r.adminAction(1, 1, "ID", func(c *cli.Context, cl *client.Client, a []string) (any, error) {
					return cl.DrainAgent(c.Context, a[0])
				}),
			},
			{
				Name:      "undrain",
				Usage:     "make drained agent ID take work again",
				ArgsUsage: "ID",
				Flags:     globalFlags(),
				Action: r.adminAction(1, 1, "ID", func(c *cli.Context, cl *client.Client, a []string) (any, error) {
					return cl.UndrainAgent(c.Context, a[0])
				}),
			},
		},
	}
}

// slotList formats slots as cpu=2,mem=4g, keys sorted; "-" when none.
func slotList(m map[string]string) string {
	if len(m) == 0 {
		return "-"
	}
	var b strings.Builder
	for i, k := range slices.Sorted(maps.Keys(m)) {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(k + "=" + m[k])
	}
	return b.String()
}

func (r *runner) printAgents(list *events.AgentListResponse) error {
	tw := tabwriter.NewWriter(r.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tState\tCapacity\tUsed\tSessions\tHeartbeat\tHost\tRuntime\tGroup")
	for _, a := range list.Agents {
		used, sessions := slotList(a.Used), fmt.Sprint(a.Sessions)
		if !list.Ledger {
			used, sessions = "?", "?"
		}
		age := (time.Duration(a.HeartbeatAge * float64(time.Second))).Truncate(100*time.Millisecond).String() + " ago"
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", a.ID, a.State, slotList(a.Capacity), used, sessions, age,
			cell(a.Host), cell(a.Runtime), cell(a.ScalingGroup))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if !list.Ledger {
		fmt.Fprintln(r.stderr, "no scheduler answered: used and sessions unknown (is a bai-scheduler running?)")
	}
	return nil
}

func (r *runner) printAgent(a *events.AgentStatus) error {
	tw := tabwriter.NewWriter(r.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "Agent:\t%s\nState:\t%s\nCapacity:\t%s\nUsed:\t%s\nSessions:\t%d\n", a.ID, a.State, slotList(a.Capacity), slotList(a.Used), a.Sessions)
	if a.Drained && a.DrainedAt != nil {
		fmt.Fprintf(tw, "Drained:\t%s by %s\n", a.DrainedAt.Local().Format("2006-01-02 15:04:05"), a.DrainedBy)
	}
	return tw.Flush()
}
