package cli

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/bai-sh/bai/pkg/events"
	"github.com/bai-sh/bai/pkg/slots"
	"github.com/bai-sh/bai/tools/bai/client"
)

// rmWait bounds how long run --rm waits for its session to terminate.
const rmWait = 30 * time.Second

// sessionFlags are the flags of run and start that shape the session.
func sessionFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringSliceFlag{Name: "resources", Aliases: []string{"r"}, Usage: "resource slot `KEY=VALUE` (cpu=4, mem=8g, cuda.shares=2); repeatable"},
		&cli.StringSliceFlag{Name: "env", Aliases: []string{"e"}, Usage: "environment variable `KEY=VALUE`; repeatable"},
		&cli.StringFlag{Name: "name", Aliases: []string{"t"}, Usage: "session `NAME` (default: chosen by the server)"},
		&cli.StringFlag{Name: "tag", Usage: "a free-form `TAG`"},
		&cli.StringFlag{Name: "type", Usage: "session `TYPE`: interactive or batch (default: the server's)"},
		&cli.IntFlag{Name: "priority", Value: events.DefaultPriority, Usage: "queue `PRIORITY`, 0 to 100; higher goes first"},
		&cli.StringFlag{Name: "starts-at", Usage: "start no earlier than `TIME` (RFC 3339, or a delay such as 10m)"},
		&cli.DurationFlag{Name: "batch-timeout", Usage: "end a batch session still running after `DURATION`"},
		&cli.StringSliceFlag{Name: "depends", Usage: "session `ID` that must finish successfully first; repeatable"},
	}
}

// createRequest builds and validates the request of run and start.
func createRequest(c *cli.Context) (events.CreateRequest, error) {
	args, err := argsBetween(c, 1, 1, "IMAGE")
	if err != nil {
		return events.CreateRequest{}, err
	}
	req := events.CreateRequest{
		Image: args[0],
		Name:  c.String("name"),
		Tag:   c.String("tag"),
		Type:  events.SessionType(c.String("type")),
		Slots: c.StringSlice("resources"),
	}
	switch {
	case req.Image == "":
		return req, invalidf("the image is empty")
	case len(req.Image) > events.MaxImageLen:
		return req, invalidf("the image is longer than %d characters", events.MaxImageLen)
	case len(req.Name) > events.MaxNameLen:
		return req, invalidf("--name is longer than %d characters", events.MaxNameLen)
	case len(req.Tag) > events.MaxTagLen:
		return req, invalidf("--tag is longer than %d characters", events.MaxTagLen)
	case req.Type != "" && req.Type != events.TypeInteractive && req.Type != events.TypeBatch:
		return req, invalidf("--type must be interactive or batch, not %q", req.Type)
	}
	if c.IsSet("priority") {
		p := c.Int("priority")
		if p < events.MinPriority || p > events.MaxPriority {
			return req, invalidf("--priority must be %d to %d, not %d", events.MinPriority, events.MaxPriority, p)
		}
		req.Priority = &p
	}
	if v := c.String("starts-at"); v != "" {
		at, err := time.Parse(time.RFC3339, v)
		if err != nil {
			d, derr := time.ParseDuration(v)
			if derr != nil || d < 0 {
				return req, invalidf("bad --starts-at %q: give an RFC 3339 time or a delay such as 10m", v)
			}
			at = time.Now().Add(d)
		}
		at = at.UTC()
		req.StartsAt = &at
	}
	req.Depends = c.StringSlice("depends")
	if req.BatchTimeout = c.Duration("batch-timeout"); req.BatchTimeout < 0 {
		return req, invalidf("--batch-timeout must be positive")
	}
	if _, err := slots.ParseList(req.Slots); err != nil {
		return req, invalidf("bad resource slot: %v", err)
	}
	envs := c.StringSlice("env")
	if len(envs) > events.MaxEnvVars {
		return req, invalidf("more than %d environment variables", events.MaxEnvVars)
	}
	for _, kv := range envs {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" || strings.ContainsAny(k, " \t\n\x00") {
			return req, invalidf("bad environment variable %q: want KEY=VALUE", kv)
		}
		if req.Env == nil {
			req.Env = make(map[string]string, len(envs))
		}
		req.Env[k] = v
	}
	if _, err := outputFormat(c); err != nil {
		return req, err
	}
	return req, nil
}

func (r *runner) runCommand() *cli.Command {
	return &cli.Command{
		Name:      "run",
		Usage:     "start a session, run code in it and print its output",
		ArgsUsage: "IMAGE",
		Description: "Creates a session of IMAGE, runs CODE in it and streams its stdout and stderr.\n" +
			"Exits with the code's exit code. With --rm the session is terminated afterwards;\n" +
			"without it the session stays (see bai ps, bai rm).",
		Flags: append(append([]cli.Flag{
			&cli.BoolFlag{Name: "rm", Usage: "terminate the session when the code has run"},
			&cli.StringFlag{Name: "code", Aliases: []string{"c"}, Usage: "the `CODE` to run, through the image's interpreter"},
			&cli.StringFlag{Name: "exec", Usage: "a shell `COMMAND` line to run instead of code"},
			&cli.BoolFlag{Name: "quiet", Aliases: []string{"q"}, Usage: "print only the code's output (bai run always does)"},
		}, sessionFlags()...), globalFlags()...),
		Action: r.run,
	}
}

func (r *runner) startCommand() *cli.Command {
	return &cli.Command{
		Name:      "start",
		Usage:     "start a session and print its id once it runs",
		ArgsUsage: "IMAGE",
		Flags: append(append([]cli.Flag{
			&cli.DurationFlag{Name: "max-wait", Usage: "give up waiting after `DURATION` (the session stays queued; exit 3); 0 waits forever"},
		}, sessionFlags()...), globalFlags()...),
		Action: r.start,
	}
}

// endsRun reports whether ev means the session will run no code: a start
// failure, an error, a cancel or a termination.
func endsRun(ev *events.Event) bool {
	if ev.Name == events.EventFailure {
		return true
	}
	switch ev.Status() {
	case events.StatusError, events.StatusCancelled, events.StatusTerminated:
		return true
	}
	return false
}

// describe says what ev did to session sid, for an error line.
func describe(sid string, ev *events.Event) string {
	what := "failed"
	switch ev.Status() {
	case events.StatusCancelled:
		what = "was cancelled"
	case events.StatusTerminated:
		what = "was terminated"
	case events.StatusTerminating:
		what = "is terminating"
	}
	msg := fmt.Sprintf("session %s %s", sid, what)
	if ev.Reason != "" {
		msg += " (" + string(ev.Reason) + ")"
	}
	if ev.Message != "" {
		msg += ": " + ev.Message
	}
	return msg
}

// runState is what run has seen of its session.
type runState struct {
	sid, runID string
	exited     bool
	exitCode   int
	final      bool // the session reached TERMINATED or CANCELLED
}

// chunk handles one output message of the session.
func (r *runner) chunk(st *runState, ch *client.Chunk) {
	if ch.RunID != st.runID || st.exited {
		return
	}
	switch ch.Stream {
	case events.StreamStdout:
		_, _ = r.stdout.Write(ch.Data)
	case events.StreamStderr:
		_, _ = r.stderr.Write(ch.Data)
	case events.StreamExit:
		st.exited, st.exitCode = true, ch.ExitCode
	}
}

func (st *runState) event(ev *events.Event) {
	if ev.Status().Final() {
		st.final = true
	}
}

// follow streams the run's output until its exit message, or fails when
// the session ends without running it.
func (r *runner) follow(ctx context.Context, w *client.Watcher, st *runState) error {
	for !st.exited {
		it, err := w.Next(ctx)
		if err != nil {
			return err
		}
		switch {
		case it.Output != nil:
			r.chunk(st, it.Output)
		case it.Event != nil:
			st.event(it.Event)
			if !endsRun(it.Event) {
				continue
			}
			// Output and events come on two subscriptions: take in
			// whatever output arrived before this event first.
			if err := w.Sync(ctx); err != nil {
				return err
			}
			for it2, ok := w.TryNext(); ok && !st.exited; it2, ok = w.TryNext() {
				if it2.Output != nil {
					r.chunk(st, it2.Output)
				} else if it2.Event != nil {
					st.event(it2.Event)
				}
			}
			if !st.exited {
				return errors.New(describe(st.sid, it.Event))
			}
		}
	}
	return nil
}

func (r *runner) run(c *cli.Context) error {
	req, err := createRequest(c)
	if err != nil {
		return err
	}
	code, exec := c.String("code"), c.String("exec")
	switch {
	case code == "" && exec == "":
		return invalidf("no code to run: give -c CODE")
	case code != "" && exec != "":
		return invalidf("give -c or --exec, not both")
	case len(code) > events.MaxCodeLen:
		return invalidf("the code is longer than %d bytes", events.MaxCodeLen)
	}
	ctx := c.Context
	cl, err := r.connect(c)
	if err != nil {
		return err
	}
	defer cl.Close()

	st := &runState{sid: client.NewID(), runID: client.NewID()}
	req.SessionID = st.sid
	req.Run = &events.RunSpec{ID: st.runID, Code: code, Exec: exec}
	w, err := cl.Watch(ctx, "", st.sid)
	if err != nil {
		return err
	}
	defer w.Close()
	if _, err := cl.Create(ctx, req); err != nil {
		return err
	}
	if err := r.follow(ctx, w, st); err != nil {
		if ctx.Err() != nil {
			r.interrupted(cl, st.sid, c.Bool("rm"))
		}
		return err
	}
	if c.Bool("rm") && !st.final {
		r.remove(ctx, cl, w, st)
	}
	if st.exitCode < 0 || st.exitCode > 255 {
		return exitWith(ExitFailure)
	}
	return exitWith(st.exitCode)
}

// interrupted cleans up after Ctrl-C: with --rm the session is terminated,
// without it the user is told it stays.
func (r *runner) interrupted(cl *client.Client, sid string, rm bool) {
	if !rm {
		r.errorf("interrupted; session %s keeps running (bai rm %s)", sid, sid)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := cl.Terminate(ctx, sid); err != nil {
		r.errorf("interrupted; terminate session %s: %v", sid, err)
	}
}

// remove terminates the session after its run and waits, bounded, until
// it is final. Failures are reported; the run's exit code stands.
func (r *runner) remove(ctx context.Context, cl *client.Client, w *client.Watcher, st *runState) {
	ctx, cancel := context.WithTimeout(ctx, rmWait)
	defer cancel()
	if _, err := cl.Terminate(ctx, st.sid); err != nil {
		r.errorf("terminate session %s: %v", st.sid, err)
		return
	}
	for !st.final {
		it, err := w.Next(ctx)
		if err != nil {
			if errors.Is(err, context.DeadlineExceeded) {
				err = fmt.Errorf("not terminated after %s", rmWait)
			}
			r.errorf("session %s: %v", st.sid, err)
			return
		}
		if it.Event != nil {
			st.event(it.Event)
		}
	}
}

func (r *runner) start(c *cli.Context) error {
	req, err := createRequest(c)
	if err != nil {
		return err
	}
	out, _ := outputFormat(c)
	maxWait := c.Duration("max-wait")
	if maxWait < 0 {
		return invalidf("--max-wait must not be negative")
	}
	ctx := c.Context
	cl, err := r.connect(c)
	if err != nil {
		return err
	}
	defer cl.Close()

	req.SessionID = client.NewID()
	w, err := cl.Watch(ctx, "", req.SessionID)
	if err != nil {
		return err
	}
	defer w.Close()
	resp, err := cl.Create(ctx, req)
	if err != nil {
		return err
	}
	wctx := ctx
	if maxWait > 0 {
		var cancel context.CancelFunc
		wctx, cancel = context.WithTimeout(ctx, maxWait)
		defer cancel()
	}
	for {
		it, err := w.Next(wctx)
		if err != nil {
			if errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
				return fmt.Errorf("%w: session %s did not start within %s; it stays queued (bai rm %s cancels it)",
					client.ErrTimeout, resp.SessionID, maxWait, resp.SessionID)
			}
			if ctx.Err() != nil {
				r.errorf("interrupted; session %s stays (bai rm %s)", resp.SessionID, resp.SessionID)
			}
			return err
		}
		if it.Event == nil {
			continue
		}
		if it.Event.Status() == events.StatusRunning {
			break
		}
		if endsRun(it.Event) || it.Event.Status() == events.StatusTerminating {
			return errors.New(describe(resp.SessionID, it.Event))
		}
	}
	if out == "json" {
		return r.printJSON(resp)
	}
	fmt.Fprintln(r.stdout, resp.SessionID)
	return nil
}
