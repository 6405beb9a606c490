package server

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/bai-sh/bai/internal/natstest"
	"github.com/bai-sh/bai/pkg/events"
	"github.com/bai-sh/bai/tools/bai/cli"
)

// TestImpossibleRequestsRefusedAtAdmission (issue 15, issue 12 §5): on a
// server whose agent has cpu=2 and mem=4g, `bai start -r cpu=99` and a
// slot no agent offers are refused at once with the agent's capacity, and
// nothing is stored; a request that fits the agent but finds it busy is
// admitted and waits; a tag that is not UTF-8 is refused.
func TestImpossibleRequestsRefusedAtAdmission(t *testing.T) {
	r := startServerWith(t, Config{AgentCapacity: map[string]string{"cpu": "2", "mem": "4g"}})
	tn := r.newTenant(t, "user", "")
	cl := r.clientAs(t, tn)
	ctx := context.Background()

	// The agent is known to the gateway once its heartbeat is in the
	// gateway's watch: poll until cpu=99 is refused.
	natstest.CheckFor(t, 20*time.Second, 20*time.Millisecond, func() error {
		if _, err := cl.Create(ctx, events.CreateRequest{Image: "python", Slots: []string{"cpu=99"}}); err == nil {
			// Admitted before the agent was known: it waits.
			return errors.New("cpu=99 admitted")
		}
		return nil
	})
	code, _, errOut := r.baiAs(t, tn, "start", "-r", "cpu=99", "python")
	if code != cli.ExitInvalid || errOut != "bai: no agent can ever fit cpu=99: the largest agent has cpu=2, mem=4g\n" {
		t.Fatalf("start -r cpu=99: %d %q", code, errOut)
	}
	code, _, errOut = r.baiAs(t, tn, "start", "-r", "evil.slot=1", "python")
	if code != cli.ExitInvalid || errOut != "bai: no agent offers the resource slot \"evil.slot\": the agents offer cpu, mem\n" {
		t.Fatalf("start -r evil.slot=1: %d %q", code, errOut)
	}
	code, _, errOut = r.baiAs(t, tn, "start", "-r", "mem=5g", "python")
	if code != cli.ExitInvalid || !strings.Contains(errOut, "no agent can ever fit mem=5g: the largest agent has cpu=2, mem=4g") {
		t.Fatalf("start -r mem=5g: %d %q", code, errOut)
	}
	code, _, errOut = r.baiAs(t, tn, "start", "--tag", "bad-\xff", "python")
	if code != cli.ExitInvalid || !strings.Contains(errOut, "invalid tag") {
		t.Fatalf("start --tag with invalid UTF-8: %d %q", code, errOut)
	}
	// The refusals stored nothing (an early cpu=99 admitted before the
	// agent was known is the only session there may be).
	list, err := cl.List(ctx, events.ListRequest{Statuses: events.AllStatuses, Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range list.Sessions {
		if s.Slots["cpu"] != "99" {
			t.Fatalf("a refused request was stored: %+v", s)
		}
		if _, err := cl.Terminate(ctx, s.ID); err != nil {
			t.Fatal(err)
		}
	}

	// Fits the agent, which is busy: admitted, it waits, then runs.
	busy := r.startSleeperWith(t, tn, "-r", "cpu=2", "-r", "mem=1g")
	resp, err := cl.Create(ctx, events.CreateRequest{Image: "python", Slots: []string{"cpu=2", "mem=1g"}})
	if err != nil {
		t.Fatalf("a request that fits a busy agent: %v", err)
	}
	id := resp.SessionID
	waitStatus(t, cl, id, func(i *events.SessionInfo) bool {
		return i.Status == events.StatusPending && strings.HasPrefix(i.StatusInfo, string(events.ReasonNoAgent))
	})
	if _, err := cl.Terminate(ctx, busy); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, cl, id, func(i *events.SessionInfo) bool { return i.Status == events.StatusRunning })
}

// startSleeperWith starts a session as tn with extra start flags and
// waits until it runs.
func (r *running) startSleeperWith(t *testing.T, tn tenant, flags ...string) string {
	t.Helper()
	code, out, errOut := r.baiAs(t, tn, append(append([]string{"start"}, flags...), "python")...)
	id := strings.TrimSpace(out)
	if code != 0 || !events.ValidToken(id) {
		t.Fatalf("start %v: %d %q %q", flags, code, out, errOut)
	}
	waitStatus(t, r.clientAs(t, tn), id, func(i *events.SessionInfo) bool { return i.Status == events.StatusRunning })
	return id
}
