package cli

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strconv"
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
		&cli.StringFlag{Name: "startup-command", Usage: "the shell `COMMAND` line a batch session runs, then ends (needs --type batch)"},
		&cli.StringFlag{Name: "owner", Usage: "create the session for `ACCESS_KEY` (admins only; it is enqueued, not followed)"},
		&cli.IntFlag{Name: "priority", Value: events.DefaultPriority, Usage: "queue `PRIORITY`, 0 to 100; higher goes first"},
		&cli.StringFlag{Name: "starts-at", Usage: "start no earlier than `TIME` (RFC 3339, or a delay such as 10m)"},
		&cli.DurationFlag{Name: "batch-timeout", Usage: "end a batch session still running after `DURATION`"},
		&cli.StringSliceFlag{Name: "depends", Usage: "session `ID` that must finish successfully first; repeatable"},
		&cli.BoolFlag{Name: "network", Usage: "give the session a network (default: none, loopback only)"},
	}
}

// createRequest builds and validates the request of run and start.
func createRequest(c *cli.Context) (events.CreateRequest, error) {
	var args []string
	var err error
	if c.Command.Name == "run" {
		// IMAGE FILE...
		if args, err = argsBetween(c, 0, -1, "IMAGE"); err == nil && len(args) == 0 {
			err = usageErrorf("run takes IMAGE [FILE...] (see '%s --help')", c.Command.HelpName)
		}
	} else {
		args, err = argsBetween(c, 1, 1, "IMAGE")
	}
	if err != nil {
		return events.CreateRequest{}, err
	}
	req := events.CreateRequest{
		Image: args[0],
		Name:  c.String("name"),
		Tag:   c.String("tag"),
		Type:  events.SessionType(c.String("type")),
		// A batch session's command (bai run follows its output).
		StartupCommand: c.String("startup-command"),
		Network:        c.Bool("network"),
		Slots:          c.StringSlice("resources"),
		Owner:          c.String("owner"),
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
	case req.Owner != "" && !events.ValidToken(req.Owner):
		return req, invalidf("invalid --owner access key %q", req.Owner)
	case req.Type != "" && req.Type != events.TypeInteractive && req.Type != events.TypeBatch:
		return req, invalidf("--type must be interactive or batch, not %q", req.Type)
	case req.Type == events.TypeBatch && strings.TrimSpace(req.StartupCommand) == "":
		return req, invalidf("a batch session needs --startup-command COMMAND")
	case req.StartupCommand != "" && req.Type != events.TypeBatch:
		return req, invalidf("--startup-command runs in a batch session only: add --type batch")
	case len(req.StartupCommand) > events.MaxCodeLen:
		return req, invalidf("--startup-command is longer than %d bytes", events.MaxCodeLen)
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
		ArgsUsage: "IMAGE [FILE...]",
		Description: "Creates a session of IMAGE, uploads FILEs (relative paths, kept) to its work\n" +
			"directory, runs CODE (or --exec COMMAND, or the first FILE) in it and streams its stdout and stderr.\n" +
			"Exits with the code's exit code. With --rm the session is terminated afterwards;\n" +
			"without it the session stays (see bai ps, bai rm).",
		Flags: append(append([]cli.Flag{
			&cli.BoolFlag{Name: "rm", Usage: "terminate the session when the code has run"},
			&cli.StringFlag{Name: "code", Aliases: []string{"c"}, Usage: "the `CODE` to run, through the image's interpreter"},
			&cli.StringFlag{Name: "exec", Usage: "a shell `COMMAND` line to run instead of code"},
			&cli.BoolFlag{Name: "quiet", Aliases: []string{"q"}, Usage: "print only the code's output (bai run always does)"},
			&cli.BoolFlag{Name: "no-reuse", Usage: "fail if a live session has the --name, instead of running the code in it"},
			&cli.BoolFlag{Name: "enqueue-only", Usage: "only enqueue the session and print its id (the code is not run), as start"},
			&cli.StringFlag{Name: "max-wait", Usage: "give up after `S` seconds (or a duration: 1m30s) if the session has not started; it stays queued, the code is not run (exit 3)"},
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
			&cli.StringFlag{Name: "max-wait", Usage: "give up waiting after `S` seconds (or a duration: 1m30s); the session stays queued (exit 3); 0 waits forever"},
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
	// terminating: the session reached TERMINATING (by anyone's request).
	terminating bool
	prog        *progress
	// json collects the output for one JSON object (--output json).
	json           bool
	stdout, stderr strings.Builder
}

// runResult is what run prints with --output json.
type runResult struct {
	SessionID string `json:"session_id"`
	RunID     string `json:"run_id"`
	ExitCode  int    `json:"exit_code"`
	Stdout    string `json:"stdout"`
	Stderr    string `json:"stderr"`
}

// chunk handles one output message of the session.
func (r *runner) chunk(st *runState, ch *client.Chunk) {
	if ch.RunID != st.runID || st.exited {
		return
	}
	if ch.Stream == events.StreamExit {
		r.timing.mark("exit")
	} else {
		r.timing.mark("first-output")
	}
	switch {
	case st.json && ch.Stream == events.StreamStdout:
		st.stdout.Write(ch.Data)
		return
	case st.json && ch.Stream == events.StreamStderr:
		st.stderr.Write(ch.Data)
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
	switch s := ev.Status(); {
	case s.Final():
		st.final = true
	case s == events.StatusTerminating:
		st.terminating = true
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
		case it.Err != nil:
			r.errorf("warning: %v", it.Err)
		case it.Output != nil:
			r.chunk(st, it.Output)
		case it.Event != nil:
			st.event(it.Event)
			st.prog.event(it.Event)
			if !endsRun(it.Event) {
				continue
			}
			// Output and events come on two subscriptions: take in
			// whatever output arrived before this event first.
			if err := w.Sync(ctx); err != nil {
				return err
			}
			for it2, ok := w.TryNext(); ok && !st.exited; it2, ok = w.TryNext() {
				if it2.Err != nil {
					r.errorf("warning: %v", it2.Err)
				} else if it2.Output != nil {
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

// maxWait parses --max-wait: seconds, or a Go duration.
func maxWait(c *cli.Context) (time.Duration, error) {
	v := strings.TrimSpace(c.String("max-wait"))
	if v == "" {
		return 0, nil
	}
	var d time.Duration
	if secs, err := strconv.ParseFloat(v, 64); err == nil && !math.IsNaN(secs) && !math.IsInf(secs, 0) {
		d = time.Duration(secs * float64(time.Second))
	} else if d, err = time.ParseDuration(v); err != nil {
		return 0, invalidf("--max-wait %q: want seconds or a duration such as 1m30s", v)
	}
	if d < 0 {
		return 0, invalidf("--max-wait must not be negative")
	}
	return d, nil
}

// liveStatus reports whether a session in s can still run code.
func liveStatus(s events.Status) bool {
	return !s.Final() && s != events.StatusTerminating && s != events.StatusError
}

func (r *runner) run(c *cli.Context) error {
	req, err := createRequest(c)
	if err != nil {
		return err
	}
	code, exec := c.String("code"), c.String("exec")
	enqueueOnly := c.Bool("enqueue-only")
	var files []localFile // --enqueue-only runs nothing: its files are ignored
	if !enqueueOnly {
		if files, err = readFiles(c.Args().Slice()[1:]); err != nil {
			return err
		}
	}
	// A batch session with nothing else to run: run follows its startup
	// command, which ends the session.
	startup := code == "" && exec == "" && req.StartupCommand != ""
	if code == "" && exec == "" && len(files) > 0 && !startup {
		code = runFileCode(files[0].remote)
	}
	switch {
	case startup && len(files) > 0:
		return invalidf("a batch session's startup command gets no files: run without FILE arguments")
	case code == "" && exec == "" && !enqueueOnly && !startup:
		return invalidf("no code to run: give -c CODE")
	case code != "" && exec != "":
		return invalidf("give -c or --exec, not both")
	case len(code) > events.MaxCodeLen:
		return invalidf("the code is longer than %d bytes", events.MaxCodeLen)
	}
	wait, err := maxWait(c)
	if err != nil {
		return err
	}
	ctx := c.Context
	cl, err := r.connect(c)
	if err != nil {
		return err
	}
	defer cl.Close()

	out, _ := outputFormat(c)
	// A session for another key is enqueued, not followed: following it
	// needs subscribe rights on the owner's subjects.
	if req.Owner == cl.AccessKey() {
		req.Owner = ""
	}
	if req.Owner != "" {
		return r.enqueueFor(c, cl, req, out)
	}
	// Backend.AI's reuse rule: a live session with the same name runs
	// the code itself.
	st := &runState{sid: client.NewID(), runID: client.NewID(), json: out == "json",
		prog: newProgress(r.stderr, out == "text" && !c.Bool("quiet") && r.terminal(r.stderr))}
	reuse, running := false, false
	if req.Name != "" {
		info, err := cl.Get(ctx, req.Name)
		switch {
		case err == nil && liveStatus(info.Status):
			if c.Bool("no-reuse") {
				return fmt.Errorf("session %s (%s) exists and is %s; --no-reuse refuses to run in it", req.Name, info.ID, info.Status)
			}
			reuse, st.sid = true, info.ID
			running = info.Status == events.StatusRunning
		case err != nil && !errors.Is(err, events.ErrNotFound):
			return err
		}
	}
	if enqueueOnly {
		if reuse {
			if out == "json" {
				return r.printJSON(events.CreateResponse{SessionID: st.sid, Name: req.Name, Duplicate: true})
			}
			fmt.Fprintln(r.stdout, st.sid)
			return nil
		}
		req.SessionID = st.sid
		resp, err := cl.Create(ctx, req)
		if err != nil {
			return err
		}
		if out == "json" {
			return r.printJSON(resp)
		}
		fmt.Fprintln(r.stdout, resp.SessionID)
		return nil
	}
	run := events.RunSpec{ID: st.runID, Code: code, Exec: exec}
	if startup {
		if reuse {
			return fmt.Errorf("session %s (%s) exists and is live; a batch session needs a new --name", req.Name, st.sid)
		}
		st.runID = events.StartupRunID
	}
	if run.Files, err = uploadFiles(ctx, cl, st.sid, st.runID, files); err != nil {
		return err
	}
	// Every request below goes on this connection, after the subscriptions.
	w, err := cl.WatchOwn(st.sid)
	if err != nil {
		return err
	}
	defer w.Close()
	w.FromStart(st.runID)
	if reuse || wait > 0 {
		// Start (or find) the session without the code, wait until it
		// runs, then execute the code in it.
		if !reuse {
			req.SessionID = st.sid
			if _, err := cl.Create(ctx, req); err != nil {
				return err
			}
		}
		// A session found RUNNING a moment ago is not asked again (a
		// round trip on the exec path): an execute of one that ended
		// meanwhile is refused all the same.
		if !running {
			if err := r.waitRunning(ctx, cl, w, st.sid, wait, st.prog); err != nil {
				return err
			}
		}
		if !startup {
			if _, err := cl.Execute(ctx, events.ExecuteRequest{SessionID: st.sid, Image: req.Image, Run: run}); err != nil {
				return err
			}
			r.timing.mark("accepted")
		}
	} else {
		req.SessionID = st.sid
		if !startup {
			req.Run = &run
		}
		if _, err := cl.Create(ctx, req); err != nil {
			return err
		}
		r.timing.mark("accepted")
		if st.prog != nil {
			if info, err := cl.Get(ctx, st.sid); err == nil && info.Status == events.StatusPending {
				st.prog.queued(info.QueuePosition)
			}
		}
	}
	if err := r.follow(ctx, w, st); err != nil {
		if ctx.Err() != nil {
			r.interrupted(cl, st.sid, c.Bool("rm"))
		}
		return err
	}
	if c.Bool("rm") && !st.final && !startup {
		r.remove(ctx, cl, w, st)
		r.timing.mark("removed")
	}
	if st.json {
		if err := r.printJSON(runResult{SessionID: st.sid, RunID: st.runID, ExitCode: st.exitCode,
			Stdout: st.stdout.String(), Stderr: st.stderr.String()}); err != nil {
			return err
		}
	}
	if st.exitCode < 0 || st.exitCode > 255 {
		return exitWith(ExitFailure)
	}
	return exitWith(st.exitCode)
}

// waitRunning waits, through w (subscribed before), until session sid is
// RUNNING; maxWait > 0 bounds the wait (exit 3, the session stays).
func (r *runner) waitRunning(ctx context.Context, cl *client.Client, w *client.Watcher, sid string, maxWait time.Duration, prog *progress) error {
	defer prog.done()
	if info, err := cl.Get(ctx, sid); err == nil {
		switch info.Status {
		case events.StatusRunning:
			return nil
		case events.StatusPending:
			prog.queued(info.QueuePosition)
		}
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
					client.ErrTimeout, sid, maxWait, sid)
			}
			if ctx.Err() != nil {
				r.errorf("interrupted; session %s stays (bai rm %s)", sid, sid)
			}
			return err
		}
		if it.Event == nil {
			continue
		}
		prog.event(it.Event)
		if it.Event.Status() == events.StatusRunning {
			return nil
		}
		if endsRun(it.Event) || it.Event.Status() == events.StatusTerminating {
			return errors.New(describe(sid, it.Event))
		}
	}
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
// the scheduler has turned the request into TERMINATING (or the session is
// final). It does not wait for TERMINATED: the run's processes are all gone
// already (its exit message comes once nothing of it runs), and the
// kernel's teardown (work dir, cgroups, state) is the agent's durable work
// from the log on, whether this process waits for it or not. Failures are
// reported; the run's exit code stands.
func (r *runner) remove(ctx context.Context, cl *client.Client, w *client.Watcher, st *runState) {
	ctx, cancel := context.WithTimeout(ctx, rmWait)
	defer cancel()
	if _, err := cl.Terminate(ctx, st.sid); err != nil {
		r.errorf("terminate session %s: %v", st.sid, err)
		return
	}
	for !st.final && !st.terminating {
		it, err := w.Next(ctx)
		if err != nil {
			if errors.Is(err, context.DeadlineExceeded) {
				err = fmt.Errorf("not terminating after %s", rmWait)
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
	wait, err := maxWait(c)
	if err != nil {
		return err
	}
	ctx := c.Context
	cl, err := r.connect(c)
	if err != nil {
		return err
	}
	defer cl.Close()

	if req.Owner == cl.AccessKey() {
		req.Owner = ""
	}
	if req.Owner != "" {
		return r.enqueueFor(c, cl, req, out)
	}
	req.SessionID = client.NewID()
	w, err := cl.WatchOwn(req.SessionID)
	if err != nil {
		return err
	}
	defer w.Close()
	resp, err := cl.Create(ctx, req)
	if err != nil {
		return err
	}
	prog := newProgress(r.stderr, out == "text" && r.terminal(r.stderr))
	if err := r.waitRunning(ctx, cl, w, resp.SessionID, wait, prog); err != nil {
		return err
	}
	if out == "json" {
		return r.printJSON(resp)
	}
	fmt.Fprintln(r.stdout, resp.SessionID)
	return nil
}

// enqueueFor creates a session for another key (--owner) and prints its id.
func (r *runner) enqueueFor(c *cli.Context, cl *client.Client, req events.CreateRequest, out string) error {
	req.SessionID = client.NewID()
	req.Run = nil
	resp, err := cl.Create(c.Context, req)
	if err != nil {
		return err
	}
	if out == "json" {
		return r.printJSON(resp)
	}
	fmt.Fprintln(r.stdout, resp.SessionID)
	return nil
}
