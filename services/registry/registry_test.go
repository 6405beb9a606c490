package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	bolt "go.etcd.io/bbolt"

	"github.com/bai-sh/bai/internal/natstest"
	"github.com/bai-sh/bai/pkg/events"
	"github.com/bai-sh/bai/pkg/events/streams"
)

const agentID = "agent-1"

var t0 = time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)

type harness struct {
	t    *testing.T
	srv  *server.Server
	nc   *nats.Conn
	js   jetstream.JetStream
	path string
	n    int
	ids  map[string][]string // ak/sid → event ids in log order
	last uint64
	// admin is the registry's AdminAccessKey.
	admin string
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	srv := natstest.RunServer(t)
	nc := natstest.Connect(t, srv)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if err := streams.Provision(context.Background(), js, streams.Options{}); err != nil {
		t.Fatal(err)
	}
	return &harness{t: t, srv: srv, nc: nc, js: js, path: filepath.Join(t.TempDir(), "registry.db"), ids: map[string][]string{}}
}

// start runs a Service on the harness's file until the returned stop (also
// a cleanup) is called.
func (h *harness) start() (*Service, func()) {
	t := h.t
	t.Helper()
	svc, err := New(Config{NC: h.nc, Path: h.path, Log: zerolog.New(zerolog.NewTestWriter(t)), AdminAccessKey: h.admin})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- svc.Run(ctx) }()
	select {
	case <-svc.Ready():
	case err := <-errc:
		cancel()
		t.Fatalf("run: %v", err)
	case <-time.After(10 * time.Second):
		cancel()
		t.Fatal("registry not ready")
	}
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := <-errc; err != nil {
				t.Errorf("run: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return svc, stop
}

// publish puts e on the log (filling V, ID and Time) and returns its
// sequence.
func (h *harness) publish(e events.Event) uint64 {
	h.t.Helper()
	h.n++
	e.V = events.Version
	if e.ID == "" {
		e.ID = fmt.Sprintf("ev-%d", h.n)
	}
	if e.Time.IsZero() {
		e.Time = t0.Add(time.Duration(h.n) * time.Second)
	}
	subj, err := events.EventSubject(&e)
	if err != nil {
		h.t.Fatal(err)
	}
	data, err := json.Marshal(&e)
	if err != nil {
		h.t.Fatal(err)
	}
	ack, err := h.js.Publish(context.Background(), subj, data, jetstream.WithMsgID(e.ID))
	if err != nil {
		h.t.Fatal(err)
	}
	if !ack.Duplicate {
		k := e.AccessKey + "/" + e.SessionID
		h.ids[k] = append(h.ids[k], e.ID)
		h.last = ack.Sequence
	}
	return ack.Sequence
}

func (h *harness) enqueue(ak, sid, name string) uint64 {
	h.t.Helper()
	return h.publish(events.Event{
		Name: events.EventEnqueued, AccessKey: ak, SessionID: sid,
		Session: &events.SessionSpec{
			ID: sid, Name: name, AccessKey: ak, Image: "cr.backend.ai/python:3.11", RequestedImage: "python:3.11",
			Type: events.TypeInteractive, Slots: map[string]string{"cpu": "1", "mem": "1073741824"},
			Domain: "default", Group: "default", ScalingGroup: "default", MainKernelID: sid + "-k0",
			StartupCommand: "echo hi", Tag: "t1", CreatedAt: t0.Add(time.Duration(h.n) * time.Second),
		},
	})
}

// event publishes one event of name for the session; agent-addressed ones
// go to agentID.
func (h *harness) event(ak, sid string, name events.Name, mod ...func(*events.Event)) uint64 {
	h.t.Helper()
	e := events.Event{Name: name, AccessKey: ak, SessionID: sid}
	if events.AddressedToAgent(name, "x") || name.AgentReport() {
		e.AgentID = agentID
	}
	for _, m := range mod {
		m(&e)
	}
	return h.publish(e)
}

// lifecycle publishes the events that take a pending session to status.
func (h *harness) lifecycle(ak, sid string, to events.Status) {
	h.t.Helper()
	steps := []struct {
		name events.Name
		st   events.Status
	}{
		{events.EventScheduled, events.StatusScheduled},
		{events.EventPreparing, events.StatusPreparing},
		{events.EventPrepared, events.StatusPrepared},
		{events.EventCreating, events.StatusCreating},
		{events.EventStarted, events.StatusRunning},
		{events.EventTerminating, events.StatusTerminating},
		{events.EventTerminated, events.StatusTerminated},
	}
	if to == events.StatusCancelled {
		h.event(ak, sid, events.EventCancelled)
		return
	}
	for _, s := range steps {
		if to == events.StatusPending {
			return
		}
		mod := func(e *events.Event) {
			if e.Name == events.EventScheduled {
				e.Session = &events.SessionSpec{ID: sid, AccessKey: ak}
			}
		}
		h.event(ak, sid, s.name, mod)
		if s.st == to {
			return
		}
	}
}

func waitApplied(t *testing.T, svc *Service, seq uint64) {
	t.Helper()
	natstest.CheckFor(t, 10*time.Second, 5*time.Millisecond, func() error {
		if got := svc.AppliedSeq(); got < seq {
			return fmt.Errorf("applied %d, want %d", got, seq)
		}
		return nil
	})
}

// requestAs sends a request as access key ak would: with a reply subject
// in ak's own inbox, the only one the registry answers on an API subject.
func requestAs(nc *nats.Conn, ak, subj string, data []byte) (*nats.Msg, error) {
	inbox := events.InboxPrefix(ak) + "." + nats.NewInbox()[len("_INBOX."):]
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		return nil, err
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := nc.PublishRequest(subj, inbox, data); err != nil {
		return nil, err
	}
	return sub.NextMsg(5 * time.Second)
}

// call makes one API request with a raw body and decodes the reply into T.
func call[T any](t *testing.T, nc *nats.Conn, ak, op string, body []byte) (T, error) {
	t.Helper()
	var v T
	subj, err := events.APISubject(ak, op)
	if err != nil {
		t.Fatal(err)
	}
	msg, err := requestAs(nc, ak, subj, body)
	if err != nil {
		t.Fatalf("request %s: %v", subj, err)
	}
	if err := events.ErrorFromHeader(map[string][]string(msg.Header)); err != nil {
		return v, err
	}
	if err := json.Unmarshal(msg.Data, &v); err != nil {
		t.Fatalf("decode reply of %s: %v: %s", subj, err, msg.Data)
	}
	return v, nil
}

func request[T any](t *testing.T, nc *nats.Conn, ak, op string, req any) (T, error) {
	t.Helper()
	body, err := json.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	return call[T](t, nc, ak, op, body)
}

func get(t *testing.T, nc *nats.Conn, ak, ref string) events.SessionInfo {
	t.Helper()
	info, err := request[events.SessionInfo](t, nc, ak, events.OpSessionGet, events.GetRequest{Ref: ref})
	if err != nil {
		t.Fatalf("get %s: %v", ref, err)
	}
	return info
}

func history(t *testing.T, nc *nats.Conn, ak, ref string) events.HistoryResponse {
	t.Helper()
	resp, err := request[events.HistoryResponse](t, nc, ak, events.OpSessionHistory, events.GetRequest{Ref: ref})
	if err != nil {
		t.Fatalf("history %s: %v", ref, err)
	}
	return resp
}

// checkHistory asserts that the session's history is exactly what the log
// had for it, in order.
func (h *harness) checkHistory(ak, sid string) {
	h.t.Helper()
	resp := history(h.t, h.nc, ak, sid)
	var got []string
	for _, e := range resp.Events {
		got = append(got, e.ID)
	}
	if want := h.ids[ak+"/"+sid]; !slices.Equal(got, want) {
		h.t.Errorf("history of %s:\n got %v\nwant %v", sid, got, want)
	}
}

func TestNewConfig(t *testing.T) {
	srv := natstest.RunServer(t)
	nc := natstest.Connect(t, srv)
	for _, tc := range []struct {
		name string
		cfg  Config
	}{
		{"no nats", Config{Path: "x.db"}},
		{"no path", Config{NC: nc}},
		{"bad durable", Config{NC: nc, Path: "x.db", Durable: "a.b"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := New(tc.cfg); !errors.Is(err, ErrConfig) {
				t.Fatalf("New: %v, want ErrConfig", err)
			}
		})
	}
	svc, err := New(Config{NC: nc, Path: "x.db"})
	if err != nil {
		t.Fatal(err)
	}
	if svc.cfg.Durable != DefaultDurable {
		t.Errorf("durable %q", svc.cfg.Durable)
	}
}

func TestLifecycle(t *testing.T) {
	h := newHarness(t)
	svc, _ := h.start()
	const ak, sid = "ak1", "s1"
	h.enqueue(ak, sid, "alpha")
	schedSeq := h.event(ak, sid, events.EventScheduled, func(e *events.Event) {
		e.Session = &events.SessionSpec{ID: sid, AccessKey: ak}
		e.AgentEpoch = 3
	})
	h.event(ak, sid, events.EventPreparing)
	h.event(ak, sid, events.EventPrepared)
	h.event(ak, sid, events.EventCreating)
	h.event(ak, sid, events.EventKernelStarted)
	h.event(ak, sid, events.EventStarted)
	h.event(ak, sid, events.EventTerminating, func(e *events.Event) { e.Reason = events.ReasonUserRequested })
	last := h.event(ak, sid, events.EventTerminated, func(e *events.Event) {
		e.Time = t0.Add(time.Hour)
		code := 0
		e.ExitCode = &code
	})
	waitApplied(t, svc, last)

	info := get(t, h.nc, ak, sid)
	if info.Status != events.StatusTerminated {
		t.Fatalf("status %s", info.Status)
	}
	schedTime := t0.Add(2 * time.Second)
	switch {
	case info.ID != sid || info.AccessKey != ak || info.Name != "alpha":
		t.Errorf("identity %+v", info)
	case info.Image != "cr.backend.ai/python:3.11" || info.Type != events.TypeInteractive || info.Tag != "t1":
		t.Errorf("image/type/tag %+v", info)
	case info.Domain != "default" || info.Group != "default" || info.ScalingGroup != "default":
		t.Errorf("domain/group %+v", info)
	case info.MainKernelID != sid+"-k0" || info.StartupCommand != "echo hi":
		t.Errorf("kernel %+v", info)
	case info.Slots["cpu"] != "1" || info.Slots["mem"] != "1073741824":
		t.Errorf("slots %v", info.Slots)
	case !info.CreatedAt.Equal(t0.Add(0)):
		t.Errorf("created %v", info.CreatedAt)
	case info.AgentID != agentID:
		t.Errorf("agent %q", info.AgentID)
	case info.ScheduledAt == nil || !info.ScheduledAt.Equal(schedTime):
		t.Errorf("scheduled at %v, want %v (seq %d)", info.ScheduledAt, schedTime, schedSeq)
	case info.TerminatedAt == nil || !info.TerminatedAt.Equal(t0.Add(time.Hour)):
		t.Errorf("terminated at %v", info.TerminatedAt)
	case !info.StatusChanged.Equal(t0.Add(time.Hour)):
		t.Errorf("status changed %v", info.StatusChanged)
	case info.StatusInfo != string(events.ReasonUserRequested):
		t.Errorf("status info %q", info.StatusInfo)
	case info.Result != events.ResultUndefined:
		t.Errorf("result %s", info.Result)
	case info.ExitCode == nil || *info.ExitCode != 0:
		t.Errorf("exit code %v", info.ExitCode)
	case info.LastSeq != last:
		t.Errorf("last seq %d, want %d", info.LastSeq, last)
	}

	last = h.event(ak, sid, events.EventSuccess)
	waitApplied(t, svc, last)
	if info := get(t, h.nc, ak, sid); info.Result != events.ResultSuccess || info.Status != events.StatusTerminated {
		t.Errorf("after success: %s %s", info.Result, info.Status)
	}
	h.checkHistory(ak, sid)
}

// TestFoldedLifecycle: an agent's folded start (session_started with its
// steps) takes a session from SCHEDULED to RUNNING, and its folded end
// to TERMINATED; each is one entry of the history, as the log has it; a
// folded start after its first step was published alone still ends
// RUNNING.
func TestFoldedLifecycle(t *testing.T) {
	h := newHarness(t)
	svc, _ := h.start()
	const ak = "ak1"
	steps := func(names ...events.Name) func(*events.Event) {
		return func(e *events.Event) {
			for i, n := range names {
				e.Steps = append(e.Steps, events.Step{Name: n, Time: t0.Add(time.Duration(i) * time.Millisecond)})
			}
		}
	}
	for _, sid := range []string{"quick", "slow"} {
		h.enqueue(ak, sid, sid)
		h.event(ak, sid, events.EventScheduled, func(e *events.Event) { e.Session = &events.SessionSpec{ID: sid, AccessKey: ak} })
	}
	h.event(ak, "quick", events.EventStarted, steps(events.EventPreparing, events.EventPrepared, events.EventCreating, events.EventKernelStarted))
	h.event(ak, "slow", events.EventPreparing)
	last := h.event(ak, "slow", events.EventStarted, steps(events.EventPrepared, events.EventCreating, events.EventKernelStarted))
	waitApplied(t, svc, last)
	for _, sid := range []string{"quick", "slow"} {
		if info := get(t, h.nc, ak, sid); info.Status != events.StatusRunning || info.LastActivity == nil {
			t.Errorf("%s after its folded start: %s, last activity %v", sid, info.Status, info.LastActivity)
		}
	}
	last = h.event(ak, "quick", events.EventTerminated, steps(events.EventKernelExited))
	waitApplied(t, svc, last)
	if info := get(t, h.nc, ak, "quick"); info.Status != events.StatusTerminated || info.TerminatedAt == nil {
		t.Errorf("after the folded end: %s, terminated at %v", info.Status, info.TerminatedAt)
	}
	hist := history(t, h.nc, ak, "quick")
	var names []events.Name
	for _, e := range hist.Events {
		names = append(names, e.Name)
	}
	if want := []events.Name{events.EventEnqueued, events.EventScheduled, events.EventStarted, events.EventTerminated}; fmt.Sprint(names) != fmt.Sprint(want) {
		t.Errorf("history %v, want %v", names, want)
	}
	h.checkHistory(ak, "quick")
	h.checkHistory(ak, "slow")
}

// The scheduler's session_pending_info says why a session waits, as
// status_info, while it is pending only.
func TestPendingInfo(t *testing.T) {
	h := newHarness(t)
	svc, _ := h.start()
	const ak, sid = "ak1", "s1"
	h.enqueue(ak, sid, "alpha")
	last := h.event(ak, sid, events.EventPendingInfo, func(e *events.Event) {
		e.Reason, e.Message = events.ReasonDependsPending, "s0"
	})
	waitApplied(t, svc, last)
	if info := get(t, h.nc, ak, sid); info.Status != events.StatusPending || info.StatusInfo != "dependencies-not-finished: s0" {
		t.Fatalf("pending: %s %q", info.Status, info.StatusInfo)
	}
	h.event(ak, sid, events.EventScheduled, func(e *events.Event) { e.Session = &events.SessionSpec{ID: sid, AccessKey: ak} })
	last = h.event(ak, sid, events.EventPendingInfo, func(e *events.Event) { e.Reason = events.ReasonNoAgent })
	waitApplied(t, svc, last)
	if info := get(t, h.nc, ak, sid); info.Status != events.StatusScheduled || info.StatusInfo != "" {
		t.Fatalf("scheduled: %s %q", info.Status, info.StatusInfo)
	}
}

func TestOutOfOrderAndDuplicates(t *testing.T) {
	h := newHarness(t)
	svc, _ := h.start()
	const ak = "ak1"

	h.enqueue(ak, "s1", "one")
	h.lifecycle(ak, "s1", events.StatusRunning)
	h.event(ak, "s1", events.EventTerminated, func(e *events.Event) { e.Reason = events.ReasonKilled })
	h.event(ak, "s1", events.EventStarted)                                                                   // out of order: absorbed
	h.event(ak, "s1", events.EventPulling)                                                                   // backwards: absorbed
	h.event(ak, "s1", events.EventTerminated, func(e *events.Event) { e.Reason = events.ReasonIdleTimeout }) // repeated: absorbed
	h.publish(events.Event{ID: "ev-1", Name: events.EventEnqueued, AccessKey: ak, SessionID: "s1",
		Session: &events.SessionSpec{ID: "s1", Name: "other"}}) // same msg id: the log drops it
	h.publish(events.Event{Name: events.EventEnqueued, AccessKey: ak, SessionID: "s1",
		Session: &events.SessionSpec{ID: "s1", Name: "other", Image: "x"}}) // a second enqueue: ignored
	h.event(ak, "ghost", events.EventStarted) // unknown session: ignored

	// A failure before the start, then a late failure result and a
	// late second placement elsewhere (absorbed: ERROR is not placed).
	h.enqueue(ak, "s2", "two")
	h.event(ak, "s2", events.EventScheduled, func(e *events.Event) { e.Session = &events.SessionSpec{ID: "s2"} })
	h.event(ak, "s2", events.EventError, func(e *events.Event) { e.Reason = events.ReasonFailedToStart })
	h.event(ak, "s2", events.EventFailure, func(e *events.Event) { c := 2; e.ExitCode = &c })
	h.event(ak, "s2", events.EventScheduled, func(e *events.Event) { e.AgentID = "agent-2"; e.Session = &events.SessionSpec{ID: "s2"} })
	waitApplied(t, svc, h.last)

	info := get(t, h.nc, ak, "s1")
	if info.Status != events.StatusTerminated || info.StatusInfo != string(events.ReasonKilled) ||
		info.Name != "one" || info.Image != "cr.backend.ai/python:3.11" || info.LastSeq == 0 {
		t.Errorf("s1: %+v", info)
	}
	termAt := *info.TerminatedAt
	if !info.StatusChanged.Equal(termAt) {
		t.Errorf("status changed %v, terminated %v", info.StatusChanged, termAt)
	}
	h.checkHistory(ak, "s1")
	if n := len(h.ids[ak+"/s1"]); n != 11 {
		t.Errorf("s1 has %d events in the log, want 11", n)
	}

	info = get(t, h.nc, ak, "s2")
	if info.Status != events.StatusError || info.Result != events.ResultFailure || info.ExitCode == nil ||
		*info.ExitCode != 2 || info.AgentID != agentID || info.ScheduledAt == nil || info.StatusInfo != string(events.ReasonFailedToStart) {
		t.Errorf("s2: %+v", info)
	}
	h.checkHistory(ak, "s2")

	if _, err := request[events.SessionInfo](t, h.nc, ak, events.OpSessionGet, events.GetRequest{Ref: "ghost"}); !errors.Is(err, events.ErrNotFound) {
		t.Errorf("ghost: %v", err)
	}
}

func TestList(t *testing.T) {
	h := newHarness(t)
	svc, _ := h.start()
	const ak = "ak1"
	want := map[string]events.Status{
		"p1": events.StatusPending, "p2": events.StatusPending, "r1": events.StatusRunning,
		"r2": events.StatusRunning, "c1": events.StatusCreating, "t1": events.StatusTerminated,
		"t2": events.StatusTerminated, "x1": events.StatusCancelled, "e1": events.StatusError,
	}
	order := []string{"t1", "p1", "r1", "x1", "c1", "t2", "e1", "r2", "p2"}
	for _, sid := range order {
		h.enqueue(ak, sid, "n-"+sid)
		switch st := want[sid]; st {
		case events.StatusError:
			h.lifecycle(ak, sid, events.StatusScheduled)
			h.event(ak, sid, events.EventError)
		default:
			h.lifecycle(ak, sid, st)
		}
	}
	// Another key's sessions are never listed.
	h.enqueue("ak2", "z1", "z")
	h.lifecycle("ak2", "z1", events.StatusRunning)
	// Two sessions changed at the same instant: ordered by id.
	tie := t0.Add(1000 * time.Hour)
	h.enqueue(ak, "tb", "tie")
	h.enqueue(ak, "ta", "tie")
	h.event(ak, "tb", events.EventCancelled, func(e *events.Event) { e.Time = tie })
	h.event(ak, "ta", events.EventCancelled, func(e *events.Event) { e.Time = tie })
	waitApplied(t, svc, h.last)

	ids := func(r events.ListResponse) []string {
		var out []string
		for _, s := range r.Sessions {
			out = append(out, s.ID)
		}
		return out
	}
	for _, tc := range []struct {
		name  string
		req   events.ListRequest
		ids   []string
		total int
	}{
		{"default", events.ListRequest{}, []string{"p2", "r2", "e1", "c1", "r1", "p1"}, 6},
		{"running", events.ListRequest{Statuses: events.RunningListStatuses}, []string{"r2", "c1", "r1"}, 3},
		{"dead", events.ListRequest{Statuses: events.DeadListStatuses}, []string{"ta", "tb", "t2", "x1", "t1"}, 5},
		{"limit", events.ListRequest{Limit: 2}, []string{"p2", "r2"}, 6},
		{"offset", events.ListRequest{Limit: 2, Offset: 2}, []string{"e1", "c1"}, 6},
		{"past the end", events.ListRequest{Offset: 10}, nil, 6},
		{"repeated status", events.ListRequest{Statuses: []events.Status{events.StatusPending, events.StatusPending}}, []string{"p2", "p1"}, 2},
		{"over max limit", events.ListRequest{Limit: 5000, Statuses: []events.Status{events.StatusError}}, []string{"e1"}, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := request[events.ListResponse](t, h.nc, ak, events.OpSessionList, tc.req)
			if err != nil {
				t.Fatal(err)
			}
			if got := ids(resp); !slices.Equal(got, tc.ids) || resp.Total != tc.total {
				t.Errorf("got %v total %d, want %v total %d", got, resp.Total, tc.ids, tc.total)
			}
			for _, s := range resp.Sessions {
				if s.AccessKey != ak || s.Status != want[s.ID] && s.ID[0] != 't' {
					t.Errorf("session %+v", s)
				}
			}
		})
	}
	if resp, err := call[events.ListResponse](t, h.nc, ak, events.OpSessionList, nil); err != nil || resp.Total != 6 {
		t.Errorf("empty body: %+v %v", resp, err)
	}
	if resp, err := request[events.ListResponse](t, h.nc, "nobody", events.OpSessionList, events.ListRequest{}); err != nil || resp.Total != 0 || resp.Sessions == nil {
		t.Errorf("unknown key: %+v %v", resp, err)
	}
}

func TestBadRequests(t *testing.T) {
	h := newHarness(t)
	svc, _ := h.start()
	waitApplied(t, svc, h.enqueue("ak1", "s1", "one"))
	for _, tc := range []struct {
		name, op string
		body     string
		code     string
		desc     string
	}{
		{"list bad status", events.OpSessionList, `{"statuses":["RUNNING","ZOMBIE"]}`, events.CodeInvalid, `unknown status "ZOMBIE"`},
		{"list negative limit", events.OpSessionList, `{"limit":-1}`, events.CodeInvalid, "negative limit -1"},
		{"list negative offset", events.OpSessionList, `{"offset":-5}`, events.CodeInvalid, "negative offset -5"},
		{"list malformed", events.OpSessionList, `{"limit":`, events.CodeInvalid, ""},
		{"list wrong type", events.OpSessionList, `{"limit":"ten"}`, events.CodeInvalid, ""},
		{"get malformed", events.OpSessionGet, `nope`, events.CodeInvalid, ""},
		{"get empty", events.OpSessionGet, `{}`, events.CodeInvalid, "get request without a session id or name"},
		{"get no body", events.OpSessionGet, ``, events.CodeInvalid, "get request without a session id or name"},
		{"get not a token", events.OpSessionGet, `{"ref":"a.b"}`, events.CodeInvalid, `invalid session id or name "a.b"`},
		{"get unknown", events.OpSessionGet, `{"ref":"nope"}`, events.CodeNotFound, `session "nope" not found`},
		{"history unknown", events.OpSessionHistory, `{"ref":"nope"}`, events.CodeNotFound, `session "nope" not found`},
		{"history wildcard", events.OpSessionHistory, `{"ref":"*"}`, events.CodeInvalid, `invalid session id or name "*"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := call[json.RawMessage](t, h.nc, "ak1", tc.op, []byte(tc.body))
			var ae *events.APIError
			if !errors.As(err, &ae) || ae.Code != tc.code {
				t.Fatalf("err %v, want code %s", err, tc.code)
			}
			if tc.desc != "" && ae.Description != tc.desc {
				t.Errorf("description %q, want %q", ae.Description, tc.desc)
			}
			if strings := ae.Description; strings == "" {
				t.Error("empty description")
			}
			if tc.code == events.CodeInvalid && !errors.Is(err, events.ErrInvalid) {
				t.Errorf("%v is not ErrInvalid", err)
			}
			if tc.code == events.CodeNotFound && !errors.Is(err, events.ErrNotFound) {
				t.Errorf("%v is not ErrNotFound", err)
			}
		})
	}
	// Another key does not see the session.
	if _, err := request[events.SessionInfo](t, h.nc, "ak2", events.OpSessionGet, events.GetRequest{Ref: "s1"}); !errors.Is(err, events.ErrNotFound) {
		t.Errorf("other key: %v", err)
	}
}

func TestGetByName(t *testing.T) {
	h := newHarness(t)
	svc, _ := h.start()
	const ak = "ak1"
	h.enqueue(ak, "s1", "web")
	h.enqueue(ak, "s2", "web")   // a later session of the same name
	h.enqueue(ak, "s3", "s1")    // a name that is another session's id: the id wins
	h.enqueue("ak2", "s9", "db") // another key's name
	h.lifecycle(ak, "s2", events.StatusScheduled)
	waitApplied(t, svc, h.last)

	for _, tc := range []struct{ ref, id string }{{"s1", "s1"}, {"web", "s2"}, {"s2", "s2"}, {"s3", "s3"}} {
		if got := get(t, h.nc, ak, tc.ref); got.ID != tc.id {
			t.Errorf("get %s: %s, want %s", tc.ref, got.ID, tc.id)
		}
	}
	if got := get(t, h.nc, ak, "web"); got.Status != events.StatusScheduled || got.AgentID != agentID {
		t.Errorf("web: %+v", got)
	}
	if resp := history(t, h.nc, ak, "web"); resp.Session.ID != "s2" || len(resp.Events) != 2 {
		t.Errorf("history by name: %+v", resp)
	}
	if _, err := request[events.SessionInfo](t, h.nc, ak, events.OpSessionGet, events.GetRequest{Ref: "db"}); !errors.Is(err, events.ErrNotFound) {
		t.Errorf("other key's name: %v", err)
	}
}

func TestRestart(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	created := func() time.Time {
		cons, err := h.js.Consumer(ctx, streams.Sessions, DefaultDurable)
		if err != nil {
			t.Fatal(err)
		}
		return cons.CachedInfo().Created
	}
	svc, stop := h.start()
	const ak = "ak1"
	for i := range 20 {
		h.enqueue(ak, fmt.Sprintf("s%d", i), "")
	}
	h.lifecycle(ak, "s0", events.StatusRunning)
	waitApplied(t, svc, h.last)
	stop()
	first := created()

	// While it is down: more events for old and new sessions.
	h.event(ak, "s0", events.EventTerminating)
	h.event(ak, "s0", events.EventTerminated)
	for i := 20; i < 30; i++ {
		h.enqueue(ak, fmt.Sprintf("s%d", i), "")
	}
	h.lifecycle(ak, "s25", events.StatusCancelled)

	svc, stop = h.start()
	waitApplied(t, svc, h.last)
	if !created().Equal(first) {
		t.Error("consumer replaced after a clean stop")
	}
	// And while it runs again.
	h.lifecycle(ak, "s1", events.StatusRunning)
	waitApplied(t, svc, h.last)
	h.checkAll(ak, 30)
	if got := get(t, h.nc, ak, "s0").Status; got != events.StatusTerminated {
		t.Errorf("s0 %s", got)
	}
	stop()

	for i := 30; i < 40; i++ {
		h.enqueue(ak, fmt.Sprintf("s%d", i), "")
	}
	h.lifecycle(ak, "s1", events.StatusTerminated)
	// As if the stopped registry had taken messages it never applied: they
	// must neither wait for redelivery nor be skipped.
	cons, err := h.js.Consumer(ctx, streams.Sessions, DefaultDurable)
	if err != nil {
		t.Fatal(err)
	}
	batch, err := cons.FetchNoWait(3)
	if err != nil {
		t.Fatal(err)
	}
	taken := 0
	for range batch.Messages() {
		taken++
	}
	if taken != 3 {
		t.Fatalf("took %d messages", taken)
	}
	svc, stop = h.start()
	waitApplied(t, svc, h.last)
	h.checkAll(ak, 40)
	if created().Equal(first) {
		t.Error("consumer that delivered unapplied messages was kept")
	}
	stop()

	// A lost file is rebuilt from the log.
	if err := os.Remove(h.path); err != nil {
		t.Fatal(err)
	}
	svc, _ = h.start()
	waitApplied(t, svc, h.last)
	h.checkAll(ak, 40)
	if got := get(t, h.nc, ak, "s1").Status; got != events.StatusTerminated {
		t.Errorf("s1 %s", got)
	}
}

// checkAll checks history and totals of every session of ak.
func (h *harness) checkAll(ak string, n int) {
	h.t.Helper()
	for i := range n {
		h.checkHistory(ak, fmt.Sprintf("s%d", i))
	}
	all, err := request[events.ListResponse](h.t, h.nc, ak, events.OpSessionList, events.ListRequest{Statuses: events.AllStatuses, Limit: 1000})
	if err != nil || all.Total != n || len(all.Sessions) != n {
		h.t.Errorf("list all: total %d, %d sessions, %v", all.Total, len(all.Sessions), err)
	}
	for _, s := range all.Sessions {
		if want := h.ids[ak+"/"+s.ID]; len(want) == 0 || s.LastSeq == 0 {
			h.t.Errorf("session %s: %+v", s.ID, s)
		}
	}
}

func TestMalformedMessages(t *testing.T) {
	h := newHarness(t)
	svc, _ := h.start()
	const ak = "ak1"
	h.enqueue(ak, "s1", "one")
	ctx := context.Background()
	for _, m := range []struct{ subj, data string }{
		{"bai.session.ak1.s1.session_started", "{not json"},
		{"bai.session.ak1.s1.session_started", `{"v":1,"id":"x","name":"session_started","access_key":"ak1","session_id":"other"}`},
		{"bai.session.ak1.s1.session_started", `{"v":99,"id":"y","name":"session_started","access_key":"ak1","session_id":"s1"}`},
		{"bai.session.ak1.s1.no_such_event", `{}`},
		{"bai.session.ak1.s1.session_scheduled", `{"v":1,"id":"z","name":"session_scheduled","access_key":"ak1","session_id":"s1"}`},
	} {
		if _, err := h.js.Publish(ctx, m.subj, []byte(m.data)); err != nil {
			t.Fatal(err)
		}
	}
	h.lifecycle(ak, "s1", events.StatusRunning)
	waitApplied(t, svc, h.last)
	if got := get(t, h.nc, ak, "s1"); got.Status != events.StatusRunning {
		t.Errorf("status %s", got.Status)
	}
	h.checkHistory(ak, "s1")
	// Everything was acknowledged or terminated: nothing comes back.
	cons, err := h.js.Consumer(ctx, streams.Sessions, DefaultDurable)
	if err != nil {
		t.Fatal(err)
	}
	natstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		ci, err := cons.Info(ctx)
		if err != nil {
			return err
		}
		if ci.NumAckPending != 0 || ci.NumRedelivered != 0 || ci.AckFloor.Stream != h.last {
			return fmt.Errorf("ack pending %d, redelivered %d, ack floor %d, want %d",
				ci.NumAckPending, ci.NumRedelivered, ci.AckFloor.Stream, h.last)
		}
		return nil
	})
}

func TestRunTwice(t *testing.T) {
	h := newHarness(t)
	svc, _ := h.start()
	if err := svc.Run(context.Background()); !errors.Is(err, ErrStarted) {
		t.Fatalf("second Run: %v", err)
	}
}

// TestApplyAcrossBatchesMatchesOneBatch: sessions whose events arrive over
// many small batches (decoded once, then kept in memory between batches)
// end stored byte for byte as when the whole log is applied at once.
func TestApplyAcrossBatchesMatchesOneBatch(t *testing.T) {
	names := append(slices.Clone(benchLifecycle[:6]), events.EventTerminating, events.EventTerminated)
	recs := interleaved(t, "ak1", 300, 40, names)
	small, whole := benchStore(t, true), benchStore(t, true)
	for i := 0; i < len(recs); {
		n := 1 + i%7
		if _, _, err := small.applyBatch(recs[i:min(i+n, len(recs))]); err != nil {
			t.Fatal(err)
		}
		i += n
	}
	if _, _, err := whole.applyBatch(recs); err != nil {
		t.Fatal(err)
	}
	dump := func(st *store) map[string]string {
		m := map[string]string{}
		if err := st.db.View(func(tx *bolt.Tx) error {
			return tx.Bucket(bucketSessions).ForEach(func(k, v []byte) error {
				m[string(k)] = string(v)
				return nil
			})
		}); err != nil {
			t.Fatal(err)
		}
		return m
	}
	a, b := dump(small), dump(whole)
	if len(a) != 300 || !maps.Equal(a, b) {
		t.Fatalf("%d sessions from small batches, %d from one; equal: %v", len(a), len(b), maps.Equal(a, b))
	}
	for k, v := range a {
		if !strings.Contains(v, `"status":"TERMINATED"`) {
			t.Fatalf("session %s not TERMINATED: %s", k, v)
		}
	}
}

// TestLedgerEntriesIgnoredQuietly: the scheduler's agent ledger entries
// share the log; the registry skips them without a word (one a placement
// round: the server's log would fill with them).
func TestLedgerEntriesIgnoredQuietly(t *testing.T) {
	var logs natstest.SyncBuffer
	st, err := openStore(filepath.Join(t.TempDir(), "registry.db"), true, zerolog.New(&logs), "")
	if err != nil {
		t.Fatal(err)
	}
	defer st.close()
	ev := events.Event{V: events.Version, ID: "l1", Name: events.EventAgentLedger, Time: time.Now().UTC(),
		AccessKey: events.LedgerOwner, SessionID: agentID, AgentID: agentID}
	subj, _ := events.EventSubject(&ev)
	data, _ := json.Marshal(&ev)
	out, applied, err := st.applyBatch([]record{{seq: 1, subject: subj, data: data}})
	if err != nil || applied != 1 || out[0] != outIgnored {
		t.Fatalf("applyBatch: %v %d %v", err, applied, out)
	}
	if logs.String() != "" {
		t.Fatalf("logged: %s", logs.String())
	}
}
