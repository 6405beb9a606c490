package cli

import (
	"fmt"
	"io"
	"strings"

	"github.com/bai-sh/bai/pkg/events"
)

// progress shows where a session stands, on one terminal line of stderr
// that it rewrites: queued (with the queue position), pulling (with a
// percentage), creating, running. A nil *progress shows nothing (piped
// output, -q, --output json).
type progress struct {
	w    io.Writer
	last string
}

// newProgress returns a progress on w when show.
func newProgress(w io.Writer, show bool) *progress {
	if !show {
		return nil
	}
	return &progress{w: w}
}

func (p *progress) set(line string) {
	if p == nil || line == "" || line == p.last || (line == "queued" && strings.HasPrefix(p.last, "queued")) {
		return // the enqueued event can come after the position was shown
	}
	p.last = line
	fmt.Fprintf(p.w, "\r\033[K%s", line)
}

// queued shows a pending session's position.
func (p *progress) queued(pos int) {
	if pos > 0 {
		p.set(fmt.Sprintf("queued (position %d)", pos))
	} else {
		p.set("queued")
	}
}

// event shows what ev says.
func (p *progress) event(ev *events.Event) {
	if p == nil {
		return
	}
	p.set(progressLine(ev))
	if ev.Status() == events.StatusRunning || endsRun(ev) {
		p.done()
	}
}

// done ends the progress line.
func (p *progress) done() {
	if p == nil || p.last == "" {
		return
	}
	fmt.Fprint(p.w, "\n")
	p.last = ""
}

// progressLine is the line an event shows, or "" for none.
func progressLine(ev *events.Event) string {
	switch ev.Name {
	case events.EventEnqueued:
		return "queued"
	case events.EventScheduled:
		return "scheduled"
	case events.EventPreparing:
		return "preparing"
	case events.EventPulling:
		return "pulling"
	case events.EventPullProgress:
		if ev.Progress != nil && *ev.Progress >= 0 {
			return fmt.Sprintf("pulling %d%%", *ev.Progress)
		}
		return "pulling"
	case events.EventCreating:
		return "creating"
	case events.EventStarted:
		return "running"
	}
	return ""
}
