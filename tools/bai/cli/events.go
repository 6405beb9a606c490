package cli

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/urfave/cli/v2"

	"github.com/bai-sh/bai/pkg/events"
	"github.com/bai-sh/bai/tools/bai/client"
)

func (r *runner) eventsCommand() *cli.Command {
	return &cli.Command{
		Name:      "events",
		Usage:     "print a session's lifecycle events, live, until it ends",
		ArgsUsage: "ID|NAME",
		Description: "Prints the session's past events, then follows new ones, one a line:\n" +
			"EVENT_NAME JSON (only the JSON with --output json). Stops once the session is\n" +
			"TERMINATED or CANCELLED, or, with --wait, once that event arrives.",
		Flags: append([]cli.Flag{
			&cli.StringFlag{Name: "wait", Usage: "stop once `EVENT_NAME` arrives (exit 1 if the session ends without it)"},
			accessKeyFlag(),
		}, globalFlags()...),
		Action: r.events,
	}
}

// validRef reports whether ref may name a session: 1 to 64 printable,
// non-space ASCII characters.
func validRef(ref string) bool {
	if ref == "" || len(ref) > max(events.MaxTokenLen, events.MaxNameLen) {
		return false
	}
	for i := 0; i < len(ref); i++ {
		if ref[i] <= ' ' || ref[i] >= 0x7f {
			return false
		}
	}
	return true
}

// accessKeyFlag names another key's session (admins only).
func accessKeyFlag() cli.Flag {
	return &cli.StringFlag{Name: "access-key", Usage: "the session belongs to `ACCESS_KEY` (admins only)"}
}

// resolve finds a session by id or name: the caller's own, or with
// --access-key another key's.
func resolve(c *cli.Context, cl *client.Client, ref string) (*events.SessionInfo, error) {
	ak := c.String("access-key")
	if ak != "" && !events.ValidToken(ak) {
		return nil, invalidf("invalid access key %q", ak)
	}
	info, err := cl.GetFor(c.Context, ak, ref)
	switch {
	case errors.Is(err, events.ErrNotFound):
		return nil, fmt.Errorf("session %s not found", ref)
	case err != nil:
		return nil, err
	case !events.ValidToken(info.ID):
		return nil, fmt.Errorf("session %s: %w: id %q", ref, client.ErrBadReply, info.ID)
	}
	return info, nil
}

// sessionArg is c's one ID|NAME argument, checked.
func sessionArg(c *cli.Context) (string, error) {
	args, err := argsBetween(c, 1, 1, "ID|NAME")
	if err != nil {
		return "", err
	}
	if !validRef(args[0]) {
		return "", invalidf("invalid session id or name %q", args[0])
	}
	return args[0], nil
}

// watchSession connects, resolves ref and subscribes to the session's
// events and output before the caller reads anything stored: nothing
// falls in between (what is in both, the caller shows once). The caller
// closes the watcher and the client.
func (r *runner) watchSession(c *cli.Context, ref string) (*client.Client, *events.SessionInfo, *client.Watcher, error) {
	cl, info, err := r.openSession(c, ref)
	if err != nil {
		return nil, nil, nil, err
	}
	w, err := cl.Watch(c.Context, info.AccessKey, info.ID)
	if err != nil {
		cl.Close()
		return nil, nil, nil, err
	}
	return cl, info, w, nil
}

// openSession connects and resolves ref; the caller closes the client.
func (r *runner) openSession(c *cli.Context, ref string) (*client.Client, *events.SessionInfo, error) {
	cl, err := r.connect(c)
	if err != nil {
		return nil, nil, err
	}
	info, err := resolve(c, cl, ref)
	if err != nil {
		cl.Close()
		return nil, nil, err
	}
	return cl, info, nil
}

func (r *runner) events(c *cli.Context) error {
	ref, err := sessionArg(c)
	if err != nil {
		return err
	}
	wait := events.Name(c.String("wait"))
	if wait != "" && !wait.Known() {
		return invalidf("unknown event %q", wait)
	}
	out, err := outputFormat(c)
	if err != nil {
		return err
	}
	ctx := c.Context
	cl, info, w, err := r.watchSession(c, ref)
	if err != nil {
		return err
	}
	defer cl.Close()
	defer w.Close()
	hist, err := cl.HistoryFor(ctx, info.AccessKey, info.ID)
	if err != nil {
		return err
	}

	seen := make(map[string]bool)
	final := hist.Session.Status.Final()
	// show prints ev once and reports whether the command is done.
	show := func(ev *events.Event) (bool, error) {
		if seen[ev.ID] {
			return false, nil
		}
		seen[ev.ID] = true
		if err := r.printEvent(out, ev); err != nil {
			return true, err
		}
		final = final || ev.Status().Final()
		return wait != "" && ev.Name == wait, nil
	}
	for i := range hist.Events {
		if done, err := show(&hist.Events[i]); done || err != nil {
			return err
		}
	}
	for !final {
		it, err := w.Next(ctx)
		if err != nil {
			return err
		}
		if it.Err != nil {
			r.errorf("skipped a message: %v", it.Err)
			continue
		}
		if it.Event == nil {
			continue
		}
		if done, err := show(it.Event); done || err != nil {
			return err
		}
	}
	if wait != "" {
		return fmt.Errorf("session %s ended without %s", info.ID, wait)
	}
	return nil
}

func (r *runner) printEvent(out string, ev *events.Event) error {
	data, err := json.Marshal(ev)
	if err != nil {
		return err
	}
	if out == "json" {
		_, err = fmt.Fprintf(r.stdout, "%s\n", data)
	} else {
		_, err = fmt.Fprintf(r.stdout, "%s %s\n", ev.Name, data)
	}
	return err
}
