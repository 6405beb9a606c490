package cli

import (
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/urfave/cli/v2"

	"github.com/bai-sh/bai/pkg/events"
	"github.com/bai-sh/bai/tools/bai/client"
)

func (r *runner) imageCommand() *cli.Command {
	return &cli.Command{
		Name:   "image",
		Usage:  "image administration",
		Action: helpOrUnknown,
		Subcommands: []*cli.Command{
			{
				Name:   "list",
				Usage:  "list the images and their aliases",
				Flags:  globalFlags(),
				Action: r.adminAction(0, 0, "", imageList),
			},
			{
				Name:      "add",
				Usage:     "register the image NAME (a full reference the agents' runtime can find), with aliases (admins only)",
				ArgsUsage: "NAME",
				Flags: append(globalFlags(),
					&cli.StringSliceFlag{Name: "alias", Usage: "an `ALIAS` of the image (repeatable)"}),
				Action: r.adminAction(1, 1, "NAME", func(c *cli.Context, cl *client.Client, a []string) (any, error) {
					return cl.AddImage(c.Context, a[0], c.StringSlice("alias"))
				}),
			},
			{
				Name:      "alias",
				Usage:     "point ALIAS at the image TARGET (admins only)",
				ArgsUsage: "ALIAS TARGET",
				Flags:     globalFlags(),
				Action:    r.adminAction(2, 2, "ALIAS TARGET", imageAlias),
			},
		},
	}
}

func (r *runner) printImages(list *events.ImageListResponse) error {
	tw := tabwriter.NewWriter(r.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "Image\tAliases")
	for _, im := range list.Images {
		fmt.Fprintf(tw, "%s\t%s\n", im.Name, cell(strings.Join(im.Aliases, ", ")))
	}
	return tw.Flush()
}

func imageList(c *cli.Context, cl *client.Client, _ []string) (any, error) {
	return cl.Images(c.Context)
}

func imageAlias(c *cli.Context, cl *client.Client, args []string) (any, error) {
	return cl.SetImageAlias(c.Context, args[0], args[1])
}
