package cli

import (
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/urfave/cli/v2"

	"github.com/bai-sh/bai/pkg/events"
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
				Action: r.imageList,
			},
			{
				Name:      "alias",
				Usage:     "point ALIAS at the image TARGET (admins only)",
				ArgsUsage: "ALIAS TARGET",
				Flags:     globalFlags(),
				Action:    r.imageAlias,
			},
		},
	}
}

func (r *runner) printImages(out string, list *events.ImageListResponse) error {
	if out == "json" {
		return r.printJSON(list)
	}
	tw := tabwriter.NewWriter(r.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "Image\tAliases")
	for _, im := range list.Images {
		fmt.Fprintf(tw, "%s\t%s\n", im.Name, cell(strings.Join(im.Aliases, ", ")))
	}
	return tw.Flush()
}

func (r *runner) imageList(c *cli.Context) error {
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
	list, err := cl.Images(c.Context)
	if err != nil {
		return err
	}
	return r.printImages(out, list)
}

func (r *runner) imageAlias(c *cli.Context) error {
	args := c.Args().Slice()
	if len(args) != 2 {
		return usageErrorf("alias takes ALIAS TARGET (see '%s --help')", c.Command.HelpName)
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
	list, err := cl.SetImageAlias(c.Context, args[0], args[1])
	if err != nil {
		return err
	}
	return r.printImages(out, list)
}
