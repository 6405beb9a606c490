package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/bai-sh/bai/internal/natstest"
	"github.com/bai-sh/bai/pkg/events"
)

// TestQuotaChecks runs the policy checks against a registry stand-in that
// answers session.list with a fixed set of sessions.
func TestQuotaChecks(t *testing.T) {
	nc := natstest.Connect(t, natstest.RunServer(t))
	js, _ := jetstream.New(nc)
	ctx := context.Background()
	q, err := newQuotas(ctx, nc, js)
	if err != nil {
		t.Fatal(err)
	}
	sessions := []events.SessionInfo{
		{ID: "p1", Status: events.StatusPending, Slots: map[string]string{"cpu": "1", "mem": "1g"}},
		{ID: "p2", Status: events.StatusPending, Slots: map[string]string{"cpu": "1", "mem": "1g"}},
		{ID: "r1", Status: events.StatusRunning, Slots: map[string]string{"cpu": "2", "mem": "2g"}},
	}
	var asked events.ListRequest
	sub, err := nc.Subscribe(events.APIPattern(events.OpSessionList), func(m *nats.Msg) {
		_ = json.Unmarshal(m.Data, &asked)
		data, _ := json.Marshal(events.ListResponse{Sessions: sessions, Total: len(sessions)})
		_ = m.Respond(data)
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()

	spec := &events.SessionSpec{ID: "new", Slots: map[string]string{"cpu": "1", "mem": "1g"}}
	for name, c := range map[string]struct {
		policy Policy
		want   string
	}{
		"no limit":       {Policy{Name: "p"}, ""},
		"concurrent ok":  {Policy{Name: "p", MaxConcurrentSessions: 4}, ""},
		"concurrent":     {Policy{Name: "p", MaxConcurrentSessions: 3}, "You cannot run more than 3 concurrent sessions"},
		"pending":        {Policy{Name: "p", MaxPendingSessions: 2}, "You cannot have more than 2 pending sessions"},
		"pending ok":     {Policy{Name: "p", MaxPendingSessions: 3}, ""},
		"slots":          {Policy{Name: "p", TotalSlots: map[string]string{"mem": "4.5g"}}, `policy "p": mem 4g in use + 1g requested > 4608m`},
		"slots ok":       {Policy{Name: "p", TotalSlots: map[string]string{"cpu": "5", "mem": "5g"}}, ""},
		"unlisted slot":  {Policy{Name: "p", TotalSlots: map[string]string{"cuda.device": "1"}}, ""},
		"slot zero left": {Policy{Name: "p", TotalSlots: map[string]string{"cpu": "4"}}, "cpu 4 in use + 1 requested > 4"},
	} {
		err := q.check(ctx, "AKIAAAAAAAAAAAAAAAAA", &c.policy, spec)
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%s: %v", name, err)
		case c.want != "" && (!errors.Is(err, events.ErrQuota) || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%s: %v, want %q", name, err, c.want)
		}
	}
	for _, st := range asked.Statuses {
		if st.Final() || st == events.StatusError {
			t.Fatalf("counted status %s", st)
		}
	}
	// A retried create of a session already listed passes: the log answers
	// it as a duplicate.
	if err := q.check(ctx, "AKIAAAAAAAAAAAAAAAAA", &Policy{Name: "p", MaxConcurrentSessions: 1}, &events.SessionSpec{ID: "r1"}); err != nil {
		t.Fatalf("retry: %v", err)
	}
	// Without a registry, nothing is admitted.
	_ = sub.Unsubscribe()
	err = q.check(ctx, "AKIAAAAAAAAAAAAAAAAA", &Policy{Name: "p", MaxConcurrentSessions: 10}, spec)
	if !errors.Is(err, events.ErrBusy) {
		t.Fatalf("no registry: %v", err)
	}
}
