package server

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/bai-sh/bai/internal/natstest"
	"github.com/bai-sh/bai/pkg/events"
)

// TestBacklogOfOneKeyDelaysNoOther (issue 13, point 6): 1,015 pending
// sessions of one key that fit nowhere do not keep another key's small
// sessions waiting while there is room, and info and ps say why a session
// waits: which slot is short on which agents.
func TestBacklogOfOneKeyDelaysNoOther(t *testing.T) {
	if testing.Short() {
		t.Skip("1,015 creates")
	}
	r := startServerWith(t, Config{AgentCapacity: map[string]string{"cpu": "2", "mem": "2g"}, IdleTimeout: -1,
		// Sessions that fit no agent must wait here, not be refused.
		AgentMemory: -1})
	admin := r.client(t)
	ok, refusals := createMany(t, admin, 1015, events.CreateRequest{Image: "python", Slots: []string{"cpu=4", "mem=64m"}})
	if ok != 1015 {
		t.Fatalf("%d created: %v", ok, refusals[:min(len(refusals), 5)])
	}
	tn := r.newTenant(t, "user", "")
	var ids []string
	for i := range 2 {
		code, out, errOut := r.baiAs(t, tn, "start", "--name", fmt.Sprintf("small-%d", i), "-r", "cpu=1", "-r", "mem=256m", "python")
		if code != 0 {
			t.Fatalf("start: %d %s", code, errOut)
		}
		ids = append(ids, strings.TrimSpace(out))
	}
	cl := r.clientAs(t, tn)
	natstest.CheckFor(t, 60*time.Second, 20*time.Millisecond, func() error {
		for _, id := range ids {
			info, err := cl.Get(context.Background(), id)
			if err != nil {
				return err
			}
			if info.Status != events.StatusRunning {
				return fmt.Errorf("%s is %s (%s)", id, info.Status, info.StatusInfo)
			}
		}
		return nil
	})
	// Why the big ones wait, in the registry and on the CLI.
	list, err := admin.List(context.Background(), events.ListRequest{Statuses: []events.Status{events.StatusPending}, Limit: 1})
	if err != nil || len(list.Sessions) != 1 {
		t.Fatalf("pending: %v %+v", err, list)
	}
	big := list.Sessions[0].ID
	want := string(events.ReasonNoAgent) + ": cpu short on the one agent (free cpu="
	natstest.CheckFor(t, 30*time.Second, 20*time.Millisecond, func() error {
		info, err := admin.Get(context.Background(), big)
		if err != nil || !strings.HasPrefix(info.StatusInfo, want) {
			return fmt.Errorf("status info %q (%v), want %q...", info.StatusInfo, err, want)
		}
		return nil
	})
	if code, out, errOut := r.bai(t, "info", big); code != 0 || !strings.Contains(out, "cpu short on the one agent") {
		t.Fatalf("info: %d %s %s", code, out, errOut)
	}
}
