package events

import (
	"encoding/json"
	"slices"
	"testing"
	"time"
)

// A folded start is one event on the log that readers take as the five
// it stands for; a fold a publisher could not have made is refused.
func TestFoldedSteps(t *testing.T) {
	t0 := time.Date(2026, 12, 2, 0, 0, 0, 0, time.UTC)
	step := func(n Name, ms int) Step { return Step{Name: n, Time: t0.Add(time.Duration(ms) * time.Millisecond)} }
	started := Event{V: Version, ID: "e1", Name: EventStarted, Time: t0.Add(4 * time.Millisecond), AccessKey: "AK",
		SessionID: "s1", KernelID: "k1", AgentID: "a1", AgentEpoch: 3,
		Steps: []Step{step(EventPreparing, 0), step(EventPrepared, 1), step(EventCreating, 2), step(EventKernelStarted, 3)}}
	data, _ := json.Marshal(started)
	got, err := Decode("bai.session.AK.s1.session_started", data)
	if err != nil {
		t.Fatalf("Decode: %v", err)
	}
	var names []Name
	for i, e := range got.Expand() {
		names = append(names, e.Name)
		if e.SessionID != "s1" || e.AgentID != "a1" || e.KernelID != "k1" || e.AgentEpoch != 3 || len(e.Steps) != 0 {
			t.Errorf("expanded %d: %+v", i, e)
		}
		if want := t0.Add(time.Duration(i) * time.Millisecond); !e.Time.Equal(want) {
			t.Errorf("expanded %s at %v, want %v", e.Name, e.Time, want)
		}
	}
	want := []Name{EventPreparing, EventPrepared, EventCreating, EventKernelStarted, EventStarted}
	if !slices.Equal(names, want) {
		t.Fatalf("Expand: %v, want %v", names, want)
	}
	plainEvs := []Event{{Name: EventEnqueued}, {Name: EventScheduled}}
	if all := ExpandAll(append(plainEvs, *got)); len(all) != 7 || all[1].Name != EventScheduled || all[6].Name != EventStarted {
		t.Fatalf("ExpandAll: %d events", len(all))
	}

	for _, tc := range []struct {
		from, to Status
		moved    bool
	}{
		{StatusScheduled, StatusRunning, true},
		{StatusPreparing, StatusRunning, true}, // its first steps published alone before
		{StatusCreating, StatusRunning, true},
		{StatusRunning, StatusRunning, false}, // a duplicate
		{StatusTerminating, StatusTerminating, false},
		{StatusPending, StatusPending, false}, // not placed: nothing applies
	} {
		if to, moved := Advance(tc.from, got); to != tc.to || moved != tc.moved {
			t.Errorf("Advance(%s) = %s, %v; want %s, %v", tc.from, to, moved, tc.to, tc.moved)
		}
	}
	plain := &Event{Name: EventPrepared}
	if to, moved := Advance(StatusPreparing, plain); to != StatusPrepared || !moved {
		t.Errorf("Advance of a plain event = %s, %v", to, moved)
	}

	ended := Event{V: Version, ID: "e2", Name: EventTerminated, AccessKey: "AK", SessionID: "s1", AgentID: "a1",
		Steps: []Step{step(EventKernelExited, 9)}}
	data, _ = json.Marshal(ended)
	if got, err := Decode("bai.session.AK.s1.session_terminated", data); err != nil || len(got.Expand()) != 2 {
		t.Fatalf("Decode of a folded end: %v", err)
	}

	bad := map[string][]Step{
		"out of order":      {step(EventPrepared, 0), step(EventPreparing, 1)},
		"twice":             {step(EventPreparing, 0), step(EventPreparing, 1)},
		"not foldable":      {step(EventTerminated, 0)},
		"a status from far": {step(EventPreparing, 0), step(EventError, 1)},
		"unknown":           {step("bogus", 0)},
	}
	for name, steps := range bad {
		t.Run(name, func(t *testing.T) {
			e := started
			e.Steps = steps
			data, _ := json.Marshal(e)
			if _, err := Decode("bai.session.AK.s1.session_started", data); err == nil {
				t.Fatal("accepted")
			}
		})
	}
	onOther := Event{V: Version, ID: "e3", Name: EventPrepared, AccessKey: "AK", SessionID: "s1", Steps: []Step{step(EventPreparing, 0)}}
	data, _ = json.Marshal(onOther)
	if _, err := Decode("bai.session.AK.s1.kernel_prepared", data); err == nil {
		t.Fatal("steps on an event nothing folds into accepted")
	}
}
