package cli

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
)

// EnvTiming turns on bai's timing line (Env.Timing): "1" times from the
// start of the command line's own code; a Unix time in nanoseconds
// (date +%s%N, taken just before bai starts) from then, so that the
// process's start (the Go runtime and package initialisation) shows too.
const EnvTiming = "BAI_TIMING"

// timing is where a command's time went, printed as one line on stderr
// when it ends: "bai-timing: main=9.41 connected=12.30 ..." in
// milliseconds since its start, one entry a step, in the order taken.
type timing struct {
	t0    time.Time
	marks []timingMark
}

type timingMark struct {
	name string
	at   time.Time
}

// newTiming parses Env.Timing; nil where it is "", and a usage error
// where it is neither "1" nor a time in Unix nanoseconds.
func newTiming(v string, now time.Time) (*timing, error) {
	switch v {
	case "":
		return nil, nil
	case "1":
		return &timing{t0: now}, nil
	}
	ns, err := strconv.ParseInt(v, 10, 64)
	if err != nil || ns <= 0 {
		return nil, usageErrorf("$%s=%q: want 1, or the time bai started in Unix nanoseconds (date +%%s%%N)", EnvTiming, v)
	}
	t0 := time.Unix(0, ns)
	if t0.After(now) || now.Sub(t0) > time.Hour {
		return nil, usageErrorf("$%s=%q: not a time in the last hour (want the time bai started in Unix nanoseconds, date +%%s%%N)", EnvTiming, v)
	}
	return &timing{t0: t0}, nil
}

// mark notes that step name was reached now; the first mark of a name
// counts. Nothing on a nil timing.
func (t *timing) mark(name string) {
	if t == nil {
		return
	}
	for _, m := range t.marks {
		if m.name == name {
			return
		}
	}
	t.marks = append(t.marks, timingMark{name, time.Now()})
}

// TimingStep is one entry of a timing line: a step and its time, in
// milliseconds since the start.
type TimingStep struct {
	Name string
	MS   float64
}

// ParseTiming reads the timing line bai printed on stderr (all of it,
// other lines included): its steps in the order taken. An error where
// stderr has no such line, more than one, or a bad entry.
func ParseTiming(stderr string) ([]TimingStep, error) {
	var line string
	for l := range strings.Lines(stderr) {
		if rest, ok := strings.CutPrefix(l, timingPrefix); ok {
			if line != "" {
				return nil, fmt.Errorf("two timing lines in %q", stderr)
			}
			line = rest
		}
	}
	if line == "" {
		return nil, fmt.Errorf("no timing line (%s) in %q", timingPrefix, stderr)
	}
	var steps []TimingStep
	for _, f := range strings.Fields(line) {
		name, v, ok := strings.Cut(f, "=")
		ms, err := strconv.ParseFloat(v, 64)
		if !ok || name == "" || err != nil {
			return nil, fmt.Errorf("bad entry %q in timing line %q", f, line)
		}
		steps = append(steps, TimingStep{name, ms})
	}
	return steps, nil
}

// timingPrefix starts the timing line.
const timingPrefix = "bai-timing:"

// print writes the timing line.
func (t *timing) print(w io.Writer) {
	if t == nil {
		return
	}
	var b strings.Builder
	b.WriteString(timingPrefix)
	for _, m := range t.marks {
		fmt.Fprintf(&b, " %s=%.2f", m.name, float64(m.at.Sub(t.t0))/float64(time.Millisecond))
	}
	b.WriteByte('\n')
	_, _ = io.WriteString(w, b.String())
}
