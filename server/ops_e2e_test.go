package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/bai-sh/bai/internal/natstest"
	"github.com/bai-sh/bai/pkg/events"
	"github.com/bai-sh/bai/tools/bai/client"
)

// TestAdminAgentListDrainUndrain: bai admin agent list shows the local
// agent with its capacity and what is used; drained, it takes no new
// session (which waits, saying no agent is available) while its running
// one goes on; undrained, the waiting session runs. An unknown agent and
// a non-admin caller are refused with a clear error.
func TestAdminAgentListDrainUndrain(t *testing.T) {
	r := startServerWith(t, Config{AgentCapacity: map[string]string{"cpu": "4", "mem": "4g"}, IdleTimeout: -1})
	list := func() events.AgentListResponse {
		t.Helper()
		var l events.AgentListResponse
		if err := json.Unmarshal([]byte(r.ok(t, "admin", "agent", "list", "--output", "json")), &l); err != nil {
			t.Fatal(err)
		}
		return l
	}
	l := list()
	if len(l.Agents) != 1 || !l.Ledger {
		t.Fatalf("agent list %+v", l)
	}
	a := l.Agents[0]
	if a.Capacity["cpu"] != "4" || a.State != events.AgentReady || a.Sessions != 0 || a.HeartbeatAge > 30 {
		t.Fatalf("agent %+v", a)
	}
	id := a.ID
	r.ok(t, "start", "--name", "s1", "python")
	r.waitStatus(t, "s1", events.StatusRunning)
	natstest.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if a := list().Agents[0]; a.Sessions != 1 || a.Used["cpu"] != "1" {
			return fmt.Errorf("agent %+v", a)
		}
		return nil
	})
	out := r.ok(t, "admin", "agent", "list")
	if !strings.Contains(out, id) || !strings.Contains(out, "cpu=4") || !strings.Contains(out, "ready") {
		t.Fatalf("agent list:\n%s", out)
	}

	if out := r.ok(t, "admin", "agent", "drain", id); !strings.Contains(out, "draining") {
		t.Fatalf("drain:\n%s", out)
	}
	if code, _, errOut := r.bai(t, "admin", "agent", "drain", "agent-nope"); code == 0 || !strings.Contains(errOut, `unknown agent "agent-nope"`) {
		t.Fatalf("drain of an unknown agent: exit %d, %q", code, errOut)
	}
	r.ok(t, "run", "--enqueue-only", "--name", "q1", "python")
	cl := r.client(t)
	natstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		info, err := cl.Get(context.Background(), "q1")
		if err != nil || info.Status != events.StatusPending || !strings.HasPrefix(info.StatusInfo, string(events.ReasonNoAgent)+": every agent of scaling group default is drained") {
			return fmt.Errorf("q1 %+v %v", info, err)
		}
		return nil
	})
	if info, err := cl.Get(context.Background(), "s1"); err != nil || info.Status != events.StatusRunning {
		t.Fatalf("the drained agent's session: %+v %v", info, err)
	}

	tn := r.newTenant(t, "user", "")
	for _, args := range [][]string{{"admin", "agent", "list"}, {"admin", "agent", "undrain", id}} {
		if code, _, errOut := r.baiAs(t, tn, args...); code == 0 || !strings.Contains(errOut, "not an admin") {
			t.Fatalf("bai %s as a user: exit %d, %q", strings.Join(args, " "), code, errOut)
		}
	}
	if st := r.waitStatus(t, "q1", events.StatusPending); st.AgentID != "" {
		t.Fatalf("q1 placed on %s", st.AgentID)
	}

	if out := r.ok(t, "admin", "agent", "undrain", id); !strings.Contains(out, "ready") {
		t.Fatalf("undrain:\n%s", out)
	}
	r.waitStatus(t, "q1", events.StatusRunning)
}

// TestAdminImageAdd: an admin registers an image with an alias, which
// image list shows and a session can use; bad names, conflicts and a
// non-admin are refused and change nothing.
func TestAdminImageAdd(t *testing.T) {
	r := startServerWith(t, Config{AgentCapacity: map[string]string{"cpu": "4", "mem": "4g"}, IdleTimeout: -1})
	r.ok(t, "admin", "image", "add", "--alias", "tools", "registry.local/tools:1.0")
	out := r.ok(t, "admin", "image", "list")
	if !strings.Contains(out, "registry.local/tools:1.0") || !strings.Contains(out, "tools") {
		t.Fatalf("image list after add:\n%s", out)
	}
	before := out
	tn := r.newTenant(t, "user", "")
	for _, c := range []struct {
		as   *tenant
		args []string
		want string
	}{
		{&tn, []string{"admin", "image", "add", "evil:1"}, "not an admin"},
		{nil, []string{"admin", "image", "add", "bad name"}, "invalid image"},
		{nil, []string{"admin", "image", "add", "python"}, "already an alias"},
		{nil, []string{"admin", "image", "add", "--alias", "registry.local/tools:1.0", "new:1"}, "is an image, not an alias"},
	} {
		var code int
		var errOut string
		if c.as != nil {
			code, _, errOut = r.baiAs(t, *c.as, c.args...)
		} else {
			code, _, errOut = r.bai(t, c.args...)
		}
		if code == 0 || !strings.Contains(errOut, c.want) {
			t.Errorf("bai %s: exit %d, stderr %q, want %q", strings.Join(c.args, " "), code, errOut, c.want)
		}
	}
	if out := r.ok(t, "admin", "image", "list"); out != before {
		t.Fatalf("refused adds changed the list:\n%s\nwas\n%s", out, before)
	}
}

// TestNoRespondersSaysWhichService: a request nothing answers names the
// service, and says bai may be starting or a NATS node down.
func TestNoRespondersSaysWhichService(t *testing.T) {
	ns := natstest.RunServer(t)
	cl, err := client.Connect(context.Background(), client.Options{URL: ns.ClientURL(), AccessKey: "AKTEST", SecretKey: "x", Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	_, err = cl.ListAgents(context.Background())
	if !errors.Is(err, client.ErrNotRunning) || !strings.Contains(err.Error(), "bai gateway") || !strings.Contains(err.Error(), "NATS node") {
		t.Fatalf("err = %v", err)
	}
	_, err = cl.List(context.Background(), events.ListRequest{})
	if !errors.Is(err, client.ErrNotRunning) || !strings.Contains(err.Error(), "bai registry") {
		t.Fatalf("err = %v", err)
	}
}
