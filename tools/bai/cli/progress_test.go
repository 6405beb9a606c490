package cli

import (
	"bytes"
	"os"
	"testing"

	"github.com/bai-sh/bai/pkg/events"
)

func TestProgress(t *testing.T) {
	var buf bytes.Buffer
	p := &progress{w: &buf}
	pct := func(n int) *int { return &n }
	p.queued(3)
	p.queued(3) // unchanged: not printed again
	for _, ev := range []events.Event{
		{Name: events.EventScheduled},
		{Name: events.EventPulling},
		{Name: events.EventPullProgress, Progress: pct(40)},
		{Name: events.EventPullProgress, Progress: pct(-1)},
		{Name: events.EventCreating},
		{Name: events.EventKernelStarted}, // shows nothing
		{Name: events.EventStarted},
	} {
		p.event(&ev)
	}
	want := "\r\033[Kqueued (position 3)\r\033[Kscheduled\r\033[Kpulling\r\033[Kpulling 40%\r\033[Kpulling" +
		"\r\033[Kcreating\r\033[Krunning\n"
	if buf.String() != want {
		t.Fatalf("progress:\n got %q\nwant %q", buf.String(), want)
	}
	// Nothing at all when not on a terminal, or when asked for none.
	var nilp *progress
	nilp.event(&events.Event{Name: events.EventStarted})
	nilp.queued(1)
	nilp.done()
	if newProgress(os.Stderr, false) != nil {
		t.Fatal("progress where none belongs")
	}
}
