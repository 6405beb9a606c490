package cli

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/urfave/cli/v2"
)

// printHelp writes the help of the app or of one command in urfave/cli's
// layout, without its text/template: parsing and running those templates
// was a third of `bai --help`'s start-up.
func printHelp(w io.Writer, _ string, data any) {
	tw := tabwriter.NewWriter(w, 1, 8, 2, ' ', 0)
	defer tw.Flush()
	section := func(title string) { fmt.Fprintf(tw, "\n%s:\n", title) }
	switch d := data.(type) {
	case *cli.App:
		fmt.Fprintf(tw, "NAME:\n   %s - %s\n", d.Name, d.Usage)
		section("USAGE")
		fmt.Fprintf(tw, "   %s [global options] command [command options]\n", d.HelpName)
		if d.Version != "" && !d.HideVersion {
			section("VERSION")
			fmt.Fprintf(tw, "   %s\n", d.Version)
		}
		if cmds := d.VisibleCommands(); len(cmds) > 0 {
			section("COMMANDS")
			writeCommands(tw, cmds)
		}
		if flags := d.VisibleFlags(); len(flags) > 0 {
			section("GLOBAL OPTIONS")
			writeFlags(tw, flags)
		}
	case *cli.Command:
		fmt.Fprintf(tw, "NAME:\n   %s - %s\n", d.HelpName, d.Usage)
		section("USAGE")
		usage := d.HelpName
		if len(d.Subcommands) > 0 {
			usage += " command [command options]"
		} else if len(d.VisibleFlags()) > 0 {
			usage += " [command options]"
		}
		if d.ArgsUsage != "" {
			usage += " " + d.ArgsUsage
		}
		fmt.Fprintf(tw, "   %s\n", usage)
		if d.Description != "" {
			section("DESCRIPTION")
			for _, line := range strings.Split(d.Description, "\n") {
				if line != "" {
					line = "   " + line
				}
				fmt.Fprintln(tw, line)
			}
		}
		if cmds := d.VisibleCommands(); len(cmds) > 0 {
			section("COMMANDS")
			writeCommands(tw, cmds)
		}
		if flags := d.VisibleFlags(); len(flags) > 0 {
			section("OPTIONS")
			writeFlags(tw, flags)
		}
	default:
		fmt.Fprintf(tw, "%v\n", data)
	}
}

func writeCommands(w io.Writer, cmds []*cli.Command) {
	for _, c := range cmds {
		fmt.Fprintf(w, "   %s\t%s\n", strings.Join(c.Names(), ", "), c.Usage)
	}
}

func writeFlags(w io.Writer, flags []cli.Flag) {
	for _, f := range flags {
		fmt.Fprintf(w, "   %s\n", f.String())
	}
}
