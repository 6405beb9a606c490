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

// The scheduler's predicates through the whole system: --starts-at and
// --depends keep a session pending, and `info` says why.
func TestStartsAtAndDepends(t *testing.T) {
	r := startServer(t, t.TempDir())
	cl := r.client(t)
	create := func(req events.CreateRequest) string {
		t.Helper()
		req.Image = "python"
		resp, err := cl.Create(context.Background(), req)
		if err != nil {
			t.Fatal(err)
		}
		return resp.SessionID
	}
	at := time.Now().Add(time.Hour)
	prio := 50
	later := create(events.CreateRequest{StartsAt: &at, Priority: &prio})
	code, out, errOut := r.bai(t, "start", "python")
	dep := strings.TrimSpace(out)
	if code != 0 || !events.ValidToken(dep) {
		t.Fatalf("start: %d %q %q", code, out, errOut)
	}
	child := create(events.CreateRequest{Depends: []string{dep}})
	nosuch := create(events.CreateRequest{Depends: []string{"nosuch"}})

	waitInfo := func(id, prefix string) {
		t.Helper()
		natstest.CheckFor(t, 20*time.Second, 10*time.Millisecond, func() error {
			info, err := cl.Get(context.Background(), id)
			if err != nil {
				return err
			}
			if info.Status != events.StatusPending || !strings.HasPrefix(info.StatusInfo, prefix) {
				return fmt.Errorf("%s: %s %q", id, info.Status, info.StatusInfo)
			}
			return nil
		})
	}
	waitInfo(later, string(events.ReasonStartsAt))
	r.waitStatus(t, dep, events.StatusRunning)
	waitInfo(child, string(events.ReasonDependsPending))
	if info := r.waitStatus(t, nosuch, events.StatusCancelled); info.StatusInfo != string(events.ReasonDependencyFailed) {
		t.Fatalf("cancelled with %q", info.StatusInfo)
	}
	if code, out, errOut := r.bai(t, "rm", dep); code != 0 {
		t.Fatalf("rm: %d %q %q", code, out, errOut)
	}
	r.waitStatus(t, child, events.StatusRunning)
}
