package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/bai-sh/bai/internal/natstest"
	"github.com/bai-sh/bai/pkg/events"
	"github.com/bai-sh/bai/pkg/events/streams"
)

// put publishes an event as another service would.
func (f *fixture) put(t testing.TB, e events.Event) {
	t.Helper()
	e.V, e.AccessKey = events.Version, ak
	if e.ID == "" {
		e.ID = fmt.Sprintf("%s-%s-%d", e.SessionID, e.Name, time.Now().UnixNano())
	}
	if e.Time.IsZero() {
		e.Time = time.Now().UTC()
	}
	subj, err := events.EventSubject(&e)
	if err != nil {
		t.Fatal(err)
	}
	data, _ := json.Marshal(&e)
	if _, err := f.js.Publish(context.Background(), subj, data); err != nil {
		t.Fatal(err)
	}
}

// running creates session sid and makes it RUNNING on agent ag1.
func (f *fixture) running(t testing.TB, sid string) {
	t.Helper()
	if err := f.call(t, events.OpSessionCreate, events.CreateRequest{SessionID: sid, Image: "python"}, nil); err != nil {
		t.Fatal(err)
	}
	f.put(t, events.Event{Name: events.EventScheduled, SessionID: sid, AgentID: "ag1", Session: &events.SessionSpec{ID: sid}})
	f.put(t, events.Event{Name: events.EventStarted, SessionID: sid, AgentID: "ag1"})
}

func TestExecute(t *testing.T) {
	f := start(t, func(c *Config) {
		c.IdleTimeout = -1
		c.Images = map[string]string{"python": "python:3.11-debian12", "python:3.11": "python:3.11-debian12",
			"python:3.11-debian12": "python:3.11-debian12", "r": "r:4.4", "r:4.4": "r:4.4"}
	})
	if err := f.call(t, events.OpSessionCreate, events.CreateRequest{SessionID: "s1", Image: "python"}, nil); err != nil {
		t.Fatal(err)
	}
	run := events.RunSpec{ID: "r1", Code: "print(1)"}
	if err := f.call(t, events.OpSessionExecute, events.ExecuteRequest{SessionID: "s1", Run: run}, nil); !errors.Is(err, events.ErrConflict) {
		t.Fatalf("execute in a pending session: %v", err)
	}
	f.put(t, events.Event{Name: events.EventScheduled, SessionID: "s1", AgentID: "ag1", Session: &events.SessionSpec{ID: "s1"}})
	f.put(t, events.Event{Name: events.EventStarted, SessionID: "s1", AgentID: "ag1"})

	before := f.count(t)
	for name, c := range map[string]struct {
		req  events.ExecuteRequest
		want error
	}{
		"unknown session":   {events.ExecuteRequest{SessionID: "nope", Run: run}, events.ErrNotFound},
		"bad session id":    {events.ExecuteRequest{SessionID: "a.b", Run: run}, events.ErrInvalid},
		"bad run id":        {events.ExecuteRequest{SessionID: "s1", Run: events.RunSpec{ID: "a b", Code: "x"}}, events.ErrInvalid},
		"empty code":        {events.ExecuteRequest{SessionID: "s1", Run: events.RunSpec{ID: "r"}}, events.ErrInvalid},
		"unknown image":     {events.ExecuteRequest{SessionID: "s1", Image: "cobol", Run: run}, events.ErrInvalid},
		"file not uploaded": {events.ExecuteRequest{SessionID: "s1", Run: events.RunSpec{ID: "r", Exec: "cat x", Files: []string{"x"}}}, events.ErrInvalid},
		"file out of tree":  {events.ExecuteRequest{SessionID: "s1", Run: events.RunSpec{ID: "r", Exec: "cat x", Files: []string{"../x"}}}, events.ErrInvalid},
	} {
		if err := f.call(t, events.OpSessionExecute, c.req, nil); !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", name, err, c.want)
		}
	}
	for _, bad := range []events.UploadRequest{
		{SessionID: "s1", RunID: "r", Path: "/etc/passwd"},
		{SessionID: "s1", RunID: "r", Path: "a/../../b"},
		{SessionID: "a.b", RunID: "r", Path: "a"},
		{SessionID: "s1", RunID: "r", Path: "big", Data: make([]byte, events.MaxUploadFile+1)},
	} {
		if err := f.call(t, events.OpSessionUpload, bad, nil); !errors.Is(err, events.ErrInvalid) {
			t.Errorf("upload %s/%s: %v", bad.SessionID, bad.Path, err)
		}
	}
	if n := f.count(t); n != before {
		t.Fatalf("bad requests published %d messages", n-before)
	}
	// An uploaded file makes the same run valid.
	if err := f.call(t, events.OpSessionUpload, events.UploadRequest{SessionID: "s1", RunID: "up", Path: "d/x.py", Data: []byte("print(1)")}, nil); err != nil {
		t.Fatal(err)
	}
	if err := f.call(t, events.OpSessionExecute, events.ExecuteRequest{SessionID: "s1", Run: events.RunSpec{ID: "up", Exec: "python3 d/x.py", Files: []string{"d/x.py"}}}, nil); err != nil {
		t.Fatal(err)
	}

	var resp events.ExecuteResponse
	if err := f.call(t, events.OpSessionExecute, events.ExecuteRequest{SessionID: "s1", Image: "python:3.11", Run: run}, &resp); err != nil {
		t.Fatal(err)
	}
	if resp.AgentID != "ag1" || resp.RunID != "r1" {
		t.Fatalf("execute: %+v", resp)
	}
	subj, _ := events.AgentWorkSubject(ak, "s1", events.EventExecuteRequest, "ag1")
	raw, err := f.stream.GetLastMsgForSubject(context.Background(), subj)
	if err != nil {
		t.Fatal(err)
	}
	ev, err := events.Decode(raw.Subject, raw.Data)
	if err != nil || ev.Run == nil || ev.Run.Code != "print(1)" {
		t.Fatalf("execute request: %+v %v", ev, err)
	}

	if err := f.call(t, events.OpSessionTerminate, events.TerminateRequest{SessionID: "s1"}, nil); err != nil {
		t.Fatal(err)
	}
	if err := f.call(t, events.OpSessionExecute, events.ExecuteRequest{SessionID: "s1", Run: events.RunSpec{ID: "r2", Code: "1"}}, nil); !errors.Is(err, events.ErrConflict) {
		t.Fatalf("execute in an ending session: %v", err)
	}
}

// terminateReason returns the reason of session sid's terminate request,
// or "" when there is none.
func (f *fixture) terminateReason(sid string) events.Reason {
	subj, _ := events.SessionEventSubject(ak, sid, events.EventTerminateRequest)
	raw, err := f.stream.GetLastMsgForSubject(context.Background(), subj)
	if err != nil {
		return ""
	}
	ev, err := events.Decode(raw.Subject, raw.Data)
	if err != nil {
		return ""
	}
	return ev.Reason
}

// The reaper ends an idle session, but not one whose run is still going
// until that run exits.
func TestIdleReaper(t *testing.T) {
	f := start(t, func(c *Config) { c.IdleTimeout = 200 * time.Millisecond })
	f.running(t, "idle")
	f.running(t, "busy")
	f.put(t, events.Event{Name: events.EventExecuteRequest, SessionID: "busy", AgentID: "ag1", Run: &events.RunSpec{ID: "long", Code: "x"}})
	natstest.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if r := f.terminateReason("idle"); r != events.ReasonIdleTimeout {
			return fmt.Errorf("idle session: reason %q", r)
		}
		return nil
	})
	if r := f.terminateReason("busy"); r != "" {
		t.Fatalf("a session with a run going was reaped: %q", r)
	}
	// Its run exits: now it is idle too.
	subj, _ := events.OutputSubject(ak, "busy", "long")
	msg := nats.NewMsg(subj)
	msg.Header.Set(events.HeaderStream, events.StreamExit)
	msg.Data = []byte("0")
	if _, err := f.js.PublishMsg(context.Background(), msg, jetstream.WithExpectStream(streams.Output)); err != nil {
		t.Fatal(err)
	}
	natstest.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if r := f.terminateReason("busy"); r != events.ReasonIdleTimeout {
			return fmt.Errorf("busy session: reason %q", r)
		}
		return nil
	})
}

// A restarted gateway replays the log before it reaps: a session busy
// before the restart is judged on its whole history.
func TestIdleReaperAfterRestart(t *testing.T) {
	ns := natstest.RunServer(t)
	// One connection for the gateways and the test: a request sent after
	// Ready then always finds the gateway's subscriptions.
	nc := natstest.Connect(t, ns)
	run := func(timeout time.Duration) func() {
		svc, err := New(Config{NC: nc, IdleTimeout: timeout})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- svc.Run(ctx) }()
		<-svc.Ready()
		return func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Run: %v", err)
			}
		}
	}
	stop := run(-1)
	js, _ := jetstream.New(nc)
	st, _ := js.Stream(context.Background(), streams.Sessions)
	f := &fixture{nc: nc, js: js, stream: st}
	f.running(t, "old")
	f.put(t, events.Event{Name: events.EventExecuteRequest, SessionID: "old", AgentID: "ag1", Run: &events.RunSpec{ID: "long", Code: "x"}})
	stop()

	stop = run(100 * time.Millisecond)
	defer stop()
	f.running(t, "fresh")
	natstest.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if r := f.terminateReason("fresh"); r != events.ReasonIdleTimeout {
			return fmt.Errorf("fresh session: reason %q", r)
		}
		return nil
	})
	if r := f.terminateReason("old"); r != "" {
		t.Fatalf("a session with a run going before the restart was reaped: %q", r)
	}
}
