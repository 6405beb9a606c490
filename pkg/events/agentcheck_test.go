package events

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestNotFromPlacedAgent(t *testing.T) {
	ev := func(name Name, agentID string) *Event { return &Event{Name: name, AgentID: agentID} }
	for _, tc := range []struct {
		name     string
		placedOn string
		e        *Event
		refused  bool
	}{
		{"own report", "a1", ev(EventStarted, "a1"), false},
		{"own error", "a1", ev(EventError, "a1"), false},
		{"report without agent id on a placed session", "a1", ev(EventTerminated, ""), true},
		{"error without agent id on a placed session", "a1", ev(EventError, ""), true},
		{"another agent's report", "a1", ev(EventFailure, "a2"), true},
		{"another agent's progress", "a1", ev(EventPullProgress, "a2"), true},
		{"report on an unplaced session", "", ev(EventError, "a2"), true},
		{"report without agent id on an unplaced session", "", ev(EventStarted, ""), true},
		{"error without agent id on an unplaced session", "", ev(EventError, ""), true},
		{"the scheduler's end of an unplaced error", "", ev(EventTerminated, ""), false},
		{"terminated with an agent on an unplaced session", "", ev(EventTerminated, "a1"), true},
		{"placement", "", ev(EventScheduled, "a1"), false},
		{"a second placement elsewhere", "a1", ev(EventScheduled, "a2"), false},
		{"terminating to the placement", "a1", ev(EventTerminating, "a1"), false},
		{"cancel addressed to another agent", "a1", ev(EventCancelled, "a2"), true},
		{"cancel of a pending session", "", ev(EventCancelled, ""), false},
		{"terminate request", "a1", ev(EventTerminateRequest, ""), false},
		{"pending info", "", ev(EventPendingInfo, ""), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := NotFromPlacedAgent(tc.placedOn, tc.e); got != tc.refused {
				t.Fatalf("NotFromPlacedAgent(%q, %s from %q) = %v", tc.placedOn, tc.e.Name, tc.e.AgentID, got)
			}
		})
	}
}

func TestEnqueuedSpecValidated(t *testing.T) {
	good := func() *Event {
		return &Event{V: Version, ID: "e1", Name: EventEnqueued, Time: time.Now(), AccessKey: "AK1", SessionID: "s1",
			Session: &SessionSpec{ID: "s1", AccessKey: "AK1", Name: "one", Image: "python:3.11", MainKernelID: "k1",
				Env: map[string]string{"FOO": "bar"}, Tag: "ok", Run: &RunSpec{ID: "r1", Code: "print(1)"}}}
	}
	if err := good().Validate(); err != nil {
		t.Fatalf("a good spec: %v", err)
	}
	for name, mod := range map[string]func(*Event){
		"LD_PRELOAD":          func(e *Event) { e.Session.Env = map[string]string{"LD_PRELOAD": "/tmp/x.so"} },
		"PATH":                func(e *Event) { e.Session.Env = map[string]string{"PATH": "/tmp"} },
		"bad env name":        func(e *Event) { e.Session.Env = map[string]string{"A=B": "x"} },
		"NUL in env value":    func(e *Event) { e.Session.Env = map[string]string{"A": "x\x00"} },
		"another session":     func(e *Event) { e.Session.ID = "s2" },
		"another key":         func(e *Event) { e.Session.AccessKey = "AK2" },
		"bad kernel id":       func(e *Event) { e.Session.MainKernelID = "../../etc" },
		"bad name":            func(e *Event) { e.Session.Name = "-x" },
		"control char in tag": func(e *Event) { e.Session.Tag = "a\nb" },
		"invalid UTF-8 tag":   func(e *Event) { e.Session.Tag = "a\xffb" },
		"bad run id":          func(e *Event) { e.Session.Run.ID = "a.b" },
		"NUL in code":         func(e *Event) { e.Session.Run.Code = "x\x00" },
		"bad type":            func(e *Event) { e.Session.Type = "daemon" },
		"bad priority":        func(e *Event) { p := 1000; e.Session.Priority = &p },
		"bad dependency":      func(e *Event) { e.Session.Depends = []string{"a.*"} },
	} {
		t.Run(name, func(t *testing.T) {
			e := good()
			mod(e)
			err := e.Validate()
			if !errors.Is(err, ErrBadEvent) || !strings.Contains(err.Error(), "session") {
				t.Fatalf("%s: %v", name, err)
			}
		})
	}
}

func TestCheckTag(t *testing.T) {
	for tag, ok := range map[string]bool{"": true, "exp-1 β": true, "a\xff": false, "a\uFFFDb": false, "a\tb": false, strings.Repeat("x", MaxTagLen+1): false} {
		if err := CheckTag(tag); (err == nil) != ok || err != nil && !errors.Is(err, ErrInvalid) {
			t.Errorf("CheckTag(%q): %v", tag, err)
		}
	}
}
