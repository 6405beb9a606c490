package events

import (
	"testing"
	"time"
)

// benchLifecycle is a session's usual walk through the status machine.
var benchLifecycle = []Name{
	EventEnqueued, EventScheduled, EventPreparing, EventPrepared, EventCreating,
	EventKernelStarted, EventStarted, EventTerminating, EventTerminated,
}

// BenchmarkStatusMachine walks one session through its lifecycle: each
// event's status, checked with CanTransition from the current one, as the
// scheduler and the registry do for every event of the log.
func BenchmarkStatusMachine(b *testing.B) {
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		cur := StatusNone
		for _, name := range benchLifecycle {
			to := name.Status()
			if to == StatusNone {
				continue
			}
			if CanTransition(cur, to) {
				cur = to
				n++
			}
		}
		if cur != StatusTerminated {
			b.Fatalf("ended in %s", cur)
		}
	}
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "transitions/s")
}

// BenchmarkParseSessionSubject parses an agent's work subject.
func BenchmarkParseSessionSubject(b *testing.B) {
	subj, err := AgentWorkSubject("AKBENCH", "b0000001", EventScheduled, "sim-00001")
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseSessionSubject(subj); err != nil {
			b.Fatal(err)
		}
	}
}

// benchScheduled is a session_scheduled with its session spec.
func benchScheduled() *Event {
	now := time.Now().UTC()
	return &Event{
		V: Version, ID: "e1", Name: EventScheduled, Time: now, AccessKey: "AKBENCH", SessionID: "b0000001",
		KernelID: "k1", AgentID: "sim-00001", AgentEpoch: 1,
		Session: &SessionSpec{
			ID: "b0000001", Name: "bai-b0000001", AccessKey: "AKBENCH", Image: "cr.backend.ai/python:3.11",
			RequestedImage: "python", Type: TypeInteractive, Slots: map[string]string{"cpu": "1", "mem": "268435456"},
			Domain: "default", Group: "default", ScalingGroup: "default", MainKernelID: "k1", CreatedAt: now,
		},
	}
}

// BenchmarkDecode decodes a session_scheduled with its session spec, what
// every consumer of the log does for each placement.
func BenchmarkDecode(b *testing.B) {
	e := benchScheduled()
	subj, err := EventSubject(e)
	if err != nil {
		b.Fatal(err)
	}
	data, err := Marshal(e)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Decode(subj, data); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkEncode encodes a session_scheduled, as the scheduler does for
// each placement.
func BenchmarkEncode(b *testing.B) {
	e := benchScheduled()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Marshal(e); err != nil {
			b.Fatal(err)
		}
	}
}
