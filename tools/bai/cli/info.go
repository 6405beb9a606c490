package cli

import (
	"fmt"
	"text/tabwriter"

	"github.com/urfave/cli/v2"

	"github.com/bai-sh/bai/pkg/events"
)

func (r *runner) infoCommand() *cli.Command {
	return &cli.Command{
		Name:      "info",
		Usage:     "print every field of a session",
		ArgsUsage: "ID|NAME",
		Flags:     append([]cli.Flag{accessKeyFlag()}, globalFlags()...),
		Action:    r.info,
	}
}

func (r *runner) info(c *cli.Context) error {
	ref, err := sessionArg(c)
	if err != nil {
		return err
	}
	out, err := outputFormat(c)
	if err != nil {
		return err
	}
	cl, info, err := r.openSession(c, ref)
	if err != nil {
		return err
	}
	defer cl.Close()
	if out == "json" {
		return r.printJSON(info)
	}
	tw := tabwriter.NewWriter(r.stdout, 0, 0, 2, ' ', 0)
	for _, f := range fields {
		fmt.Fprintf(tw, "%s\t%s\n", f.name, cell(text(f.value(info))))
	}
	return tw.Flush()
}

func (r *runner) logsCommand() *cli.Command {
	return &cli.Command{
		Name:      "logs",
		Usage:     "print a session's output so far (-f: and follow it until the session ends)",
		ArgsUsage: "ID|NAME",
		Description: "Prints what the session's code wrote so far, stdout to stdout and stderr to\n" +
			"stderr, in order. --output json prints every chunk with its run and stream.\n" +
			"With -f it goes on printing new output live, from any terminal, until the\n" +
			"session is TERMINATED or CANCELLED (or Ctrl-C); --output json then prints one\n" +
			"chunk a line.",
		Flags: append([]cli.Flag{accessKeyFlag(),
			&cli.BoolFlag{Name: "follow", Aliases: []string{"f"}, Usage: "follow the output live until the session ends"},
		}, globalFlags()...),
		Action: r.logs,
	}
}

func (r *runner) logs(c *cli.Context) error {
	ref, err := sessionArg(c)
	if err != nil {
		return err
	}
	if c.Bool("follow") {
		return r.followLogs(c, ref)
	}
	out, err := outputFormat(c)
	if err != nil {
		return err
	}
	cl, info, err := r.openSession(c, ref)
	if err != nil {
		return err
	}
	defer cl.Close()
	resp, err := cl.LogsFor(c.Context, info.AccessKey, info.ID)
	if err != nil {
		return err
	}
	if out == "json" {
		return r.printJSON(resp)
	}
	if resp.Truncated {
		r.errorf("older output left out")
	}
	for _, ch := range resp.Chunks {
		switch ch.Stream {
		case events.StreamStdout:
			fmt.Fprint(r.stdout, ch.Data)
		case events.StreamStderr:
			fmt.Fprint(r.stderr, ch.Data)
		}
	}
	return nil
}
