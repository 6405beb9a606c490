package cli

import (
	"fmt"

	"github.com/urfave/cli/v2"

	"github.com/bai-sh/bai/pkg/events"
	"github.com/bai-sh/bai/tools/bai/client"
)

// logCursor remembers what of a session's output was printed: the last
// chunk number per run and stream, and the runs whose exit was.
type logCursor struct {
	last   map[[2]string]uint64
	exited map[string]bool
}

// fresh reports whether a chunk was not printed yet, and records it. A
// chunk without a number (an older agent) is always fresh.
func (lc *logCursor) fresh(run, stream string, n uint64) bool {
	if stream == events.StreamExit {
		if lc.exited[run] {
			return false
		}
		lc.exited[run] = true
		return true
	}
	if n == 0 {
		return true
	}
	k := [2]string{run, stream}
	if n <= lc.last[k] {
		return false
	}
	lc.last[k] = n
	return true
}

// followLogs is logs -f: it subscribes to the session's events and
// output, prints the output stored so far, then the output that comes,
// each chunk once, until the session is final.
func (r *runner) followLogs(c *cli.Context, ref string) error {
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
	now, err := cl.GetFor(ctx, info.AccessKey, info.ID)
	if err != nil {
		return err
	}
	resp, err := cl.LogsFor(ctx, info.AccessKey, info.ID)
	if err != nil {
		return err
	}
	if resp.Truncated {
		r.errorf("older output left out")
	}
	lc := &logCursor{last: map[[2]string]uint64{}, exited: map[string]bool{}}
	for i := range resp.Chunks {
		ch := &resp.Chunks[i]
		if lc.fresh(ch.RunID, ch.Stream, ch.Chunk) {
			if err := r.printChunk(out, *ch); err != nil {
				return err
			}
		}
	}
	live := func(ch *client.Chunk) error {
		if !lc.fresh(ch.RunID, ch.Stream, ch.Number) {
			return nil
		}
		oc := events.OutputChunk{RunID: ch.RunID, Stream: ch.Stream, Data: string(ch.Data), Chunk: ch.Number}
		if ch.Stream == events.StreamExit {
			code := ch.ExitCode
			oc.ExitCode = &code
		}
		return r.printChunk(out, oc)
	}
	final := now.Status.Final()
	for !final {
		it, err := w.Next(ctx)
		if err != nil {
			return err
		}
		switch {
		case it.Err != nil:
			r.errorf("skipped a message: %v", it.Err)
		case it.Output != nil:
			if err := live(it.Output); err != nil {
				return err
			}
		case it.Event != nil && it.Event.Status().Final():
			final = true
		}
	}
	// Output and events come on two subscriptions: take in the output
	// that arrived before the final event.
	if err := w.Sync(ctx); err != nil {
		return err
	}
	for it, ok := w.TryNext(); ok; it, ok = w.TryNext() {
		if it.Output != nil {
			if err := live(it.Output); err != nil {
				return err
			}
		}
	}
	return nil
}

// printChunk prints one chunk: its data on stdout or stderr, or with
// --output json the chunk as one line.
func (r *runner) printChunk(out string, ch events.OutputChunk) error {
	if out == "json" {
		return r.printJSON(ch)
	}
	var err error
	switch ch.Stream {
	case events.StreamStdout:
		_, err = fmt.Fprint(r.stdout, ch.Data)
	case events.StreamStderr:
		_, err = fmt.Fprint(r.stderr, ch.Data)
	}
	return err
}
