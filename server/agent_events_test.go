package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/bai-sh/bai/internal/natstest"
	"github.com/bai-sh/bai/pkg/events"
	"github.com/bai-sh/bai/tools/bai/client"
)

// logCount counts the JSON log lines of component whose message is msg
// and whose text holds every one of also.
func logCount(logs *natstest.SyncBuffer, component, msg string, also ...string) int {
	n := 0
	for line := range strings.SplitSeq(logs.String(), "\n") {
		var l struct{ Component, Message string }
		if json.Unmarshal([]byte(line), &l) != nil || l.Component != component || l.Message != msg {
			continue
		}
		ok := true
		for _, s := range also {
			ok = ok && strings.Contains(line, s)
		}
		if ok {
			n++
		}
	}
	return n
}

func waitStatus(t *testing.T, cl *client.Client, id string, ok func(*events.SessionInfo) bool) *events.SessionInfo {
	t.Helper()
	var info *events.SessionInfo
	natstest.CheckFor(t, 30*time.Second, 10*time.Millisecond, func() error {
		var err error
		info, err = cl.Get(context.Background(), id)
		if err != nil {
			return err
		}
		if !ok(info) {
			return fmt.Errorf("%s: %s %q", id, info.Status, info.StatusInfo)
		}
		return nil
	})
	return info
}

// TestAgentSpeaksOnlyForItsPlacedKernels (issue 12 §4): with the agent's
// own NATS credentials, events for a running session without the agent
// id or with another agent's, events for a session not placed yet, and a
// session_enqueued for another key with LD_PRELOAD in its environment
// change nothing in the registry or the scheduler.
func TestAgentSpeaksOnlyForItsPlacedKernels(t *testing.T) {
	var logs natstest.SyncBuffer
	r := startServerWith(t, Config{AgentCapacity: map[string]string{"cpu": "2", "mem": "4g"},
		Log: zerolog.New(&logs).Level(zerolog.InfoLevel)})
	ctx := context.Background()
	b, c := r.newTenant(t, "user", ""), r.newTenant(t, "user", "")
	cl := r.clientAs(t, b)

	// A runs and holds every cpu; P fits the agent but waits for A.
	a, err := cl.Create(ctx, events.CreateRequest{Image: "python", Slots: []string{"cpu=2", "mem=64m"}})
	if err != nil {
		t.Fatal(err)
	}
	ainfo := waitStatus(t, cl, a.SessionID, func(i *events.SessionInfo) bool { return i.Status == events.StatusRunning })
	p, err := cl.Create(ctx, events.CreateRequest{Image: "python", Slots: []string{"cpu=2", "mem=64m"}})
	if err != nil {
		t.Fatal(err)
	}
	waitStatus(t, cl, p.SessionID, func(i *events.SessionInfo) bool {
		return i.Status == events.StatusPending && strings.HasPrefix(i.StatusInfo, string(events.ReasonNoAgent))
	})

	rc, agentID := r.rawAgent(t)
	if agentID != ainfo.AgentID {
		t.Fatalf("agent user %q, A placed on %q", agentID, ainfo.AgentID)
	}
	forge := func(e *events.Event) {
		t.Helper()
		e.V, e.Time = events.Version, time.Now().UTC()
		if e.ID == "" {
			e.ID = "forged-" + string(e.Name) + "-" + e.SessionID + "-" + e.AgentID
		}
		subj, err := events.EventSubject(e)
		if err != nil {
			t.Fatal(err)
		}
		data, _ := json.Marshal(e)
		if err := rc.nc.Publish(subj, data); err != nil {
			t.Fatal(err)
		}
	}
	// (a) On the running session: no agent id, another agent's id.
	forge(&events.Event{Name: events.EventTerminated, AccessKey: b.ak, SessionID: a.SessionID, KernelID: ainfo.MainKernelID,
		Reason: "forged", Message: "forged"})
	forge(&events.Event{Name: events.EventError, AccessKey: b.ak, SessionID: a.SessionID, KernelID: ainfo.MainKernelID,
		AgentID: "agent-other", Reason: "forged"})
	// (b) On the session not placed: another agent's id, its own, none.
	for _, id := range []string{"agent-other", agentID, ""} {
		forge(&events.Event{Name: events.EventError, AccessKey: b.ak, SessionID: p.SessionID, AgentID: id, Reason: "forged"})
	}
	forge(&events.Event{Name: events.EventStarted, AccessKey: b.ak, SessionID: p.SessionID, AgentID: agentID})
	// (c) A session for another key, with the loader preloading a library.
	forgedSID := "forged-enqueued-1"
	forge(&events.Event{Name: events.EventEnqueued, AccessKey: c.ak, SessionID: forgedSID, KernelID: "k-forged",
		Session: &events.SessionSpec{ID: forgedSID, AccessKey: c.ak, Name: "forged", Image: "python:3.11-debian12",
			Type: events.TypeInteractive, Slots: map[string]string{"cpu": "0.1", "mem": "64m"}, MainKernelID: "k-forged",
			Domain: "default", Group: "default", ScalingGroup: "default", CreatedAt: time.Now().UTC(),
			Env: map[string]string{"LD_PRELOAD": "/tmp/evil.so"}}})
	if err := rc.nc.Flush(); err != nil {
		t.Fatal(err)
	}

	// Both the scheduler and the registry refuse the six events of (a)
	// and (b), and (unless the server denied its publish) the enqueue.
	enqueueDenied := func() bool {
		for {
			select {
			case err := <-rc.errs:
				if errors.Is(err, nats.ErrPermissionViolation) && strings.Contains(err.Error(), "session_enqueued") {
					return true
				}
			default:
				return false
			}
		}
	}
	denied := false
	natstest.CheckFor(t, 20*time.Second, 20*time.Millisecond, func() error {
		for _, comp := range []string{"scheduler", "registry"} {
			if n := logCount(&logs, comp, "event_from_wrong_agent_refused"); n < 6 {
				return fmt.Errorf("%s refused %d events", comp, n)
			}
		}
		denied = denied || enqueueDenied()
		if !denied && (logCount(&logs, "scheduler", "bad_event", "LD_PRELOAD") == 0 || logCount(&logs, "registry", "bad event terminated", forgedSID) == 0) {
			return errors.New("the forged enqueue is neither denied nor refused")
		}
		return nil
	})
	if n := logCount(&logs, "registry", "event_from_wrong_agent_refused", a.SessionID); n != 2 {
		t.Errorf("registry refused %d events of A, want 2", n)
	}

	// A sentinel after the forgeries: once the scheduler has said why it
	// waits, it has applied (or refused) everything before it.
	d, err := cl.Create(ctx, events.CreateRequest{Image: "python", Slots: []string{"cpu=0.5", "mem=64m"}})
	if err != nil {
		t.Fatal(err)
	}
	waitStatus(t, cl, d.SessionID, func(i *events.SessionInfo) bool { return strings.HasPrefix(i.StatusInfo, string(events.ReasonNoAgent)) })
	// The registry: A still runs, P still waits, C has no session.
	if info, err := cl.Get(ctx, a.SessionID); err != nil || info.Status != events.StatusRunning || info.StatusInfo == "forged" {
		t.Fatalf("A after the forgeries: %v %+v", err, info)
	}
	if info, err := cl.Get(ctx, p.SessionID); err != nil || info.Status != events.StatusPending || info.AgentID != "" {
		t.Fatalf("P after the forgeries: %v %+v", err, info)
	}
	if _, err := r.clientAs(t, c).Get(ctx, forgedSID); !errors.Is(err, events.ErrNotFound) {
		t.Fatalf("the forged enqueue: %v", err)
	}
	if list, err := r.clientAs(t, c).List(ctx, events.ListRequest{Statuses: events.AllStatuses}); err != nil || list.Total != 0 {
		t.Fatalf("C's sessions: %v %+v", err, list)
	}
	// The scheduler: A's capacity is still held (P was not placed when the
	// forged end of A came), and P is still in its queue: once A really
	// ends, P runs.
	if _, err := cl.Terminate(ctx, a.SessionID); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, cl, a.SessionID, func(i *events.SessionInfo) bool {
		return i.Status == events.StatusTerminated && i.StatusInfo == string(events.ReasonUserRequested)
	})
	waitStatus(t, cl, p.SessionID, func(i *events.SessionInfo) bool { return i.Status == events.StatusRunning })
}
