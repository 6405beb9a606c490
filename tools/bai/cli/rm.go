package cli

import (
	"fmt"

	"github.com/urfave/cli/v2"

	"github.com/bai-sh/bai/pkg/events"
)

func (r *runner) rmCommand() *cli.Command {
	return &cli.Command{
		Name:      "rm",
		Usage:     "terminate sessions (a pending one is cancelled)",
		ArgsUsage: "ID|NAME [ID|NAME...]",
		Flags:     append([]cli.Flag{accessKeyFlag()}, globalFlags()...),
		Action:    r.rm,
	}
}

func (r *runner) rm(c *cli.Context) error {
	refs, err := argsBetween(c, 1, -1, "ID|NAME")
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

	failed := 0
	for _, ref := range refs {
		if !validRef(ref) {
			r.errorf("invalid session id or name %q", ref)
			failed++
			continue
		}
		info, err := resolve(c, cl, ref)
		if err != nil {
			r.errorf("%v", err)
			failed++
			continue
		}
		resp, err := cl.TerminateFor(c.Context, info.AccessKey, info.ID)
		if err != nil {
			r.errorf("terminate session %s: %v", ref, err)
			failed++
			continue
		}
		if out == "json" {
			if err := r.printJSON(resp); err != nil {
				return err
			}
			continue
		}
		what := "terminating"
		switch {
		case resp.Status == events.StatusPending:
			what = "cancelled"
		case resp.Status.Final():
			what = "already " + string(resp.Status)
		}
		label := info.ID
		if info.Name != "" && info.Name != info.ID {
			label = info.Name + " (" + info.ID + ")"
		}
		fmt.Fprintf(r.stdout, "session %s: %s\n", label, what)
	}
	if failed > 0 {
		return exitWith(ExitFailure)
	}
	return nil
}
