package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/bai-sh/bai/internal/natstest"
	"github.com/bai-sh/bai/pkg/events"
	"github.com/bai-sh/bai/pkg/events/streams"
)

const ak = "AKIATEST000000000001"

type fixture struct {
	nc     *nats.Conn
	js     jetstream.JetStream
	stream jetstream.Stream
}

func start(t testing.TB, mods ...func(*Config)) *fixture {
	t.Helper()
	ns := natstest.RunServer(t)
	nc := natstest.Connect(t, ns)
	cfg := Config{NC: nc}
	for _, m := range mods {
		m(&cfg)
	}
	svc, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx) }()
	select {
	case <-svc.Ready():
	case err := <-done:
		cancel()
		t.Fatalf("Run: %v", err)
	}
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	js, _ := jetstream.New(nc)
	st, err := js.Stream(context.Background(), streams.Sessions)
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{nc: nc, js: js, stream: st}
}

func (f *fixture) call(t testing.TB, op string, req, resp any) error {
	t.Helper()
	return f.callAs(t, ak, op, req, resp)
}

func (f *fixture) count(t *testing.T) uint64 {
	t.Helper()
	info, err := f.stream.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs
}

func TestCreateEnqueuesResolvedSession(t *testing.T) {
	f := start(t)
	var resp events.CreateResponse
	err := f.call(t, events.OpSessionCreate, events.CreateRequest{
		Image: "python", Slots: []string{"cpu=2", "mem=1.5g"}, Env: map[string]string{"FOO": "bar"},
		Run: &events.RunSpec{ID: "r1", Code: "print(1)"},
	}, &resp)
	if err != nil {
		t.Fatal(err)
	}
	if resp.Image != "python:3.11-debian12" || !events.ValidToken(resp.SessionID) || !strings.HasPrefix(resp.Name, "bai-") {
		t.Fatalf("response %+v", resp)
	}
	filter, _ := events.SessionFilter(ak, resp.SessionID)
	raw, err := f.stream.GetLastMsgForSubject(context.Background(), filter)
	if err != nil {
		t.Fatal(err)
	}
	ev, err := events.Decode(raw.Subject, raw.Data)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"cpu": "2", "mem": "1536m"}
	if ev.Name != events.EventEnqueued || ev.Session.Slots["cpu"] != want["cpu"] || ev.Session.Slots["mem"] != want["mem"] ||
		ev.Session.Type != events.TypeInteractive || ev.Session.Run.Code != "print(1)" || ev.Session.Domain != "default" {
		t.Fatalf("enqueued %+v / %+v", ev, ev.Session)
	}
}

func TestCreateTwiceIsOneSession(t *testing.T) {
	f := start(t)
	req := events.CreateRequest{SessionID: "5c7d1a9e-0d44-4c1e-9d6f-2f7a1b3c4d5e", Image: "python"}
	var a, b events.CreateResponse
	if err := f.call(t, events.OpSessionCreate, req, &a); err != nil {
		t.Fatal(err)
	}
	if err := f.call(t, events.OpSessionCreate, req, &b); err != nil {
		t.Fatal(err)
	}
	if a.SessionID != b.SessionID || a.Duplicate || !b.Duplicate {
		t.Fatalf("first %+v second %+v", a, b)
	}
	if n := f.count(t); n != 1 {
		t.Fatalf("%d messages in the log, want 1", n)
	}
}

func TestCreateOfExistingSessionIDConflicts(t *testing.T) {
	f := start(t)
	// The same id enqueued by an earlier request outside the dedupe window.
	ev := events.Event{V: 1, ID: "old", Name: events.EventEnqueued, AccessKey: ak, SessionID: "dup-1",
		Session: &events.SessionSpec{ID: "dup-1", AccessKey: ak}}
	data, _ := json.Marshal(ev)
	if _, err := f.js.Publish(context.Background(), "bai.session."+ak+".dup-1.session_enqueued", data); err != nil {
		t.Fatal(err)
	}
	err := f.call(t, events.OpSessionCreate, events.CreateRequest{SessionID: "dup-1", Image: "python"}, nil)
	if !errors.Is(err, events.ErrConflict) {
		t.Fatalf("want conflict, got %v", err)
	}
}

func TestCreateRefusesBadInput(t *testing.T) {
	f := start(t)
	long := strings.Repeat("x", events.MaxCodeLen+1)
	cases := map[string]struct {
		req  events.CreateRequest
		want string
	}{
		"unknown image":     {events.CreateRequest{Image: "cobol"}, `unknown image "cobol"`},
		"no image":          {events.CreateRequest{}, "no image"},
		"bad slot":          {events.CreateRequest{Image: "python", Slots: []string{"mem=8x"}}, "resource slots"},
		"negative slot":     {events.CreateRequest{Image: "python", Slots: []string{"cpu=-1"}}, "resource slots"},
		"duplicate slot":    {events.CreateRequest{Image: "python", Slots: []string{"cpu=1", "cpu=2"}}, "resource slots"},
		"empty code":        {events.CreateRequest{Image: "python", Run: &events.RunSpec{ID: "r", Code: "  "}}, "empty code"},
		"huge code":         {events.CreateRequest{Image: "python", Run: &events.RunSpec{ID: "r", Code: long}}, "too long"},
		"nul code":          {events.CreateRequest{Image: "python", Run: &events.RunSpec{ID: "r", Code: "a\x00"}}, "NUL"},
		"bad run id":        {events.CreateRequest{Image: "python", Run: &events.RunSpec{ID: "a.b", Code: "1"}}, "run id"},
		"bad name":          {events.CreateRequest{Image: "python", Name: "../etc"}, "session name"},
		"long name":         {events.CreateRequest{Image: "python", Name: strings.Repeat("n", 65)}, "session name"},
		"bad session id":    {events.CreateRequest{Image: "python", SessionID: "a.>"}, "session id"},
		"ld_preload":        {events.CreateRequest{Image: "python", Env: map[string]string{"LD_PRELOAD": "x"}}, "LD_PRELOAD"},
		"path":              {events.CreateRequest{Image: "python", Env: map[string]string{"PATH": "/tmp"}}, "PATH"},
		"env key with =":    {events.CreateRequest{Image: "python", Env: map[string]string{"A=B": "x"}}, "variable name"},
		"env key newline":   {events.CreateRequest{Image: "python", Env: map[string]string{"A\nB": "x"}}, "variable name"},
		"env value nul":     {events.CreateRequest{Image: "python", Env: map[string]string{"A": "x\x00"}}, "invalid value"},
		"priority too high": {events.CreateRequest{Image: "python", Priority: ptr(101)}, "invalid priority"},
		"priority negative": {events.CreateRequest{Image: "python", Priority: ptr(-1)}, "invalid priority"},
		"bad dependency":    {events.CreateRequest{Image: "python", Depends: []string{"a.b"}}, "invalid dependency"},
		"batch timeout":     {events.CreateRequest{Image: "python", BatchTimeout: time.Second}, "batch timeout"},
		"bad type":          {events.CreateRequest{Image: "python", Type: "daemon"}, "session type"},
		"batch no command":  {events.CreateRequest{Image: "python", Type: events.TypeBatch}, "startup command"},
		"tag with newline":  {events.CreateRequest{Image: "python", Tag: "a\nb"}, "tag"},
		"megabyte of image": {events.CreateRequest{Image: strings.Repeat("i", 900<<10)}, "unknown image"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			err := f.call(t, events.OpSessionCreate, c.req, nil)
			if !errors.Is(err, events.ErrInvalid) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("want invalid %q, got %v", c.want, err)
			}
			if len(err.Error()) > 400 {
				t.Fatalf("error too long: %d bytes", len(err.Error()))
			}
		})
	}
	subj, _ := events.APISubject(ak, events.OpSessionCreate)
	msg, err := requestAs(f.nc, ak, subj, []byte("{not json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := events.ErrorFromHeader(map[string][]string(msg.Header)); !errors.Is(err, events.ErrInvalid) {
		t.Fatalf("malformed JSON: %v", err)
	}
	if n := f.count(t); n != 0 {
		t.Fatalf("bad requests wrote %d messages", n)
	}
}

func TestTerminate(t *testing.T) {
	f := start(t)
	err := f.call(t, events.OpSessionTerminate, events.TerminateRequest{SessionID: "nope"}, nil)
	if !errors.Is(err, events.ErrNotFound) {
		t.Fatalf("unknown session: %v", err)
	}
	err = f.call(t, events.OpSessionTerminate, events.TerminateRequest{SessionID: "a.b"}, nil)
	if !errors.Is(err, events.ErrInvalid) {
		t.Fatalf("bad id: %v", err)
	}
	var cr events.CreateResponse
	if err := f.call(t, events.OpSessionCreate, events.CreateRequest{Image: "python"}, &cr); err != nil {
		t.Fatal(err)
	}
	var tr events.TerminateResponse
	if err := f.call(t, events.OpSessionTerminate, events.TerminateRequest{SessionID: cr.SessionID}, &tr); err != nil {
		t.Fatal(err)
	}
	if tr.Status != events.StatusPending {
		t.Fatalf("found status %q", tr.Status)
	}
	// Once final, a second rm is a conflict.
	ev := events.Event{V: 1, ID: "c1", Name: events.EventCancelled, AccessKey: ak, SessionID: cr.SessionID}
	data, _ := json.Marshal(ev)
	subj, _ := events.EventSubject(&ev)
	if _, err := f.js.Publish(context.Background(), subj, data); err != nil {
		t.Fatal(err)
	}
	err = f.call(t, events.OpSessionTerminate, events.TerminateRequest{SessionID: cr.SessionID}, nil)
	if !errors.Is(err, events.ErrConflict) || !strings.Contains(err.Error(), "CANCELLED") {
		t.Fatalf("final session: %v", err)
	}
	// Another key cannot see it.
	other, _ := events.APISubject("AKIAOTHER00000000000", events.OpSessionTerminate)
	data, _ = json.Marshal(events.TerminateRequest{SessionID: cr.SessionID})
	msg, err := requestAs(f.nc, "AKIAOTHER00000000000", other, data)
	if err != nil {
		t.Fatal(err)
	}
	if err := events.ErrorFromHeader(map[string][]string(msg.Header)); !errors.Is(err, events.ErrNotFound) {
		t.Fatalf("other key: %v", err)
	}
}

func ptr[T any](v T) *T { return &v }
