package cli

import (
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/urfave/cli/v2"

	"github.com/bai-sh/bai/pkg/events"
	"github.com/bai-sh/bai/tools/bai/client"
)

// keypairCommand is `bai admin keypair add|list|info|rm|rotate`.
func (r *runner) keypairCommand() *cli.Command {
	return &cli.Command{
		Name:   "keypair",
		Usage:  "keypair administration (admin only)",
		Action: helpOrUnknown,
		Subcommands: []*cli.Command{
			{
				Name:  "add",
				Usage: "create a keypair; prints its secret key once",
				Flags: append(globalFlags(),
					&cli.StringFlag{Name: "user-id", Usage: "user `ID` the keypair belongs to"},
					&cli.StringFlag{Name: "email", Usage: "user's `EMAIL`"},
					&cli.StringFlag{Name: "domain", Usage: "`DOMAIN` (default: default)"},
					&cli.StringSliceFlag{Name: "group", Usage: "project/group `NAME` (repeatable)"},
					&cli.StringFlag{Name: "role", Value: "user", Usage: "`ROLE`: user or admin"},
					&cli.StringFlag{Name: "policy", Usage: "resource policy `NAME` (default: default)"},
				),
				Action: r.adminAction(0, 0, "", func(c *cli.Context, cl *client.Client, _ []string) (any, error) {
					return cl.AddKeypair(c.Context, events.KeypairAddRequest{
						UserID: c.String("user-id"), Email: c.String("email"), Domain: c.String("domain"),
						Groups: c.StringSlice("group"), Role: c.String("role"), Policy: c.String("policy"),
					})
				}),
			},
			{
				Name: "list", Usage: "list keypairs", Flags: globalFlags(),
				Action: r.adminAction(0, 0, "", func(c *cli.Context, cl *client.Client, _ []string) (any, error) {
					return cl.ListKeypairs(c.Context)
				}),
			},
			{
				Name: "info", Usage: "show one keypair", ArgsUsage: "ACCESS_KEY", Flags: globalFlags(),
				Action: r.adminAction(1, 1, "ACCESS_KEY", func(c *cli.Context, cl *client.Client, a []string) (any, error) {
					return cl.KeypairInfo(c.Context, a[0])
				}),
			},
			{
				Name: "rm", Usage: "revoke a keypair; its connections are closed", ArgsUsage: "ACCESS_KEY", Flags: globalFlags(),
				Action: r.adminAction(1, 1, "ACCESS_KEY", func(c *cli.Context, cl *client.Client, a []string) (any, error) {
					return cl.RemoveKeypair(c.Context, a[0])
				}),
			},
			{
				Name: "rotate", Usage: "give a keypair a new secret key; prints it once", ArgsUsage: "ACCESS_KEY", Flags: globalFlags(),
				Action: r.adminAction(1, 1, "ACCESS_KEY", func(c *cli.Context, cl *client.Client, a []string) (any, error) {
					return cl.RotateKeypair(c.Context, a[0])
				}),
			},
		},
	}
}

// policyCommand is `bai admin policy add|list|set`.
func (r *runner) policyCommand() *cli.Command {
	policyFlags := func() []cli.Flag {
		return append(globalFlags(),
			&cli.IntFlag{Name: "max-concurrent-sessions", Usage: "unfinished sessions per key (0: no limit)"},
			&cli.IntFlag{Name: "max-pending-sessions", Usage: "pending sessions per key (0: no limit)"},
			&cli.StringSliceFlag{Name: "total-slots", Usage: "`SLOT=QTY` summed over a key's unfinished sessions (repeatable)"},
			&cli.IntFlag{Name: "idle-timeout", Usage: "idle timeout in `SECONDS` (0: none)"},
			&cli.IntFlag{Name: "max-session-lifetime", Usage: "session lifetime in `SECONDS` (0: none)"},
		)
	}
	policy := func(c *cli.Context, name string) (events.PolicyInfo, error) {
		p := events.PolicyInfo{
			Name: name, MaxConcurrentSessions: c.Int("max-concurrent-sessions"), MaxPendingSessions: c.Int("max-pending-sessions"),
			IdleTimeout: c.Int("idle-timeout"), MaxSessionLifetime: c.Int("max-session-lifetime"),
		}
		for _, kv := range c.StringSlice("total-slots") {
			k, v, ok := strings.Cut(kv, "=")
			if !ok || k == "" || v == "" {
				return p, invalidf("--total-slots %q: use SLOT=QTY, e.g. cpu=8", kv)
			}
			if p.TotalSlots == nil {
				p.TotalSlots = map[string]string{}
			}
			p.TotalSlots[k] = v
		}
		return p, nil
	}
	return &cli.Command{
		Name:   "policy",
		Usage:  "resource policy administration (admin only)",
		Action: helpOrUnknown,
		Subcommands: []*cli.Command{
			{
				Name: "add", Usage: "create a resource policy", ArgsUsage: "NAME", Flags: policyFlags(),
				Action: r.adminAction(1, 1, "NAME", func(c *cli.Context, cl *client.Client, a []string) (any, error) {
					p, err := policy(c, a[0])
					if err != nil {
						return nil, err
					}
					return cl.AddPolicy(c.Context, p)
				}),
			},
			{
				Name: "set", Usage: "replace a resource policy's limits", ArgsUsage: "NAME", Flags: policyFlags(),
				Action: r.adminAction(1, 1, "NAME", func(c *cli.Context, cl *client.Client, a []string) (any, error) {
					p, err := policy(c, a[0])
					if err != nil {
						return nil, err
					}
					return cl.SetPolicy(c.Context, p)
				}),
			},
			{
				Name: "list", Usage: "list resource policies", Flags: globalFlags(),
				Action: r.adminAction(0, 0, "", func(c *cli.Context, cl *client.Client, _ []string) (any, error) {
					return cl.ListPolicies(c.Context)
				}),
			},
		},
	}
}

// adminAction checks the arguments, connects, runs f and prints its
// answer as text or JSON.
func (r *runner) adminAction(min, max int, what string, f func(*cli.Context, *client.Client, []string) (any, error)) cli.ActionFunc {
	return func(c *cli.Context) error {
		args, err := argsBetween(c, min, max, what)
		if err != nil {
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
		v, err := f(c, cl, args)
		if err != nil {
			return err
		}
		if out == "json" {
			return r.printJSON(v)
		}
		return r.printAdmin(v)
	}
}

func (r *runner) printAdmin(v any) error {
	switch x := v.(type) {
	case *events.ImageListResponse:
		return r.printImages(x)
	case *events.AgentListResponse:
		return r.printAgents(x)
	case *events.AgentStatus:
		return r.printAgent(x)
	}
	tw := tabwriter.NewWriter(r.stdout, 0, 4, 2, ' ', 0)
	defer tw.Flush()
	switch x := v.(type) {
	case *events.KeypairInfo:
		fmt.Fprintf(tw, "Access key:\t%s\n", x.AccessKey)
		if x.SecretKey != "" {
			fmt.Fprintf(tw, "Secret key:\t%s\t(shown once)\n", x.SecretKey)
		}
		fmt.Fprintf(tw, "User:\t%s %s\nDomain:\t%s\nGroups:\t%s\nRole:\t%s\nPolicy:\t%s\nCreated:\t%s\n",
			x.UserID, x.Email, x.Domain, strings.Join(x.Groups, ","), x.Role, x.Policy, x.CreatedAt.Format("2006-01-02 15:04:05"))
	case *events.KeypairListResponse:
		fmt.Fprintln(tw, "ACCESS KEY\tUSER\tEMAIL\tDOMAIN\tROLE\tPOLICY")
		for _, k := range x.Keypairs {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", k.AccessKey, k.UserID, k.Email, k.Domain, k.Role, k.Policy)
		}
	case *events.PolicyInfo:
		printPolicies(tw, []events.PolicyInfo{*x})
	case *events.PolicyListResponse:
		printPolicies(tw, x.Policies)
	}
	return nil
}

func printPolicies(tw *tabwriter.Writer, ps []events.PolicyInfo) {
	fmt.Fprintln(tw, "NAME\tCONCURRENT\tPENDING\tTOTAL SLOTS\tIDLE TIMEOUT\tLIFETIME")
	for _, p := range ps {
		var sl []string
		for k, v := range p.TotalSlots {
			sl = append(sl, k+"="+v)
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%s\t%d\t%d\n", p.Name, p.MaxConcurrentSessions, p.MaxPendingSessions,
			strings.Join(sl, ","), p.IdleTimeout, p.MaxSessionLifetime)
	}
}
