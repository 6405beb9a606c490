package gateway

import (
	"context"
	"errors"
	"testing"

	"github.com/bai-sh/bai/internal/natstest"
	"github.com/bai-sh/bai/pkg/events"
)

// TestCreateBusy: with MaxCreating creates in progress, the next is
// answered busy and enqueues nothing; once one ends, creates pass again.
func TestCreateBusy(t *testing.T) {
	ns := natstest.RunServer(t)
	nc := natstest.Connect(t, ns)
	svc, err := New(Config{NC: nc, MaxCreating: 2})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	<-svc.Ready()
	f := &fixture{nc: nc}
	// Two creates in progress (their tokens held, as a slow publish would).
	svc.creating <- struct{}{}
	svc.creating <- struct{}{}
	req := events.CreateRequest{SessionID: "busy-1", Image: "python"}
	if err := f.call(t, events.OpSessionCreate, req, nil); !errors.Is(err, events.ErrBusy) {
		t.Fatalf("create over the limit: %v, want ErrBusy", err)
	}
	<-svc.creating
	var resp events.CreateResponse
	if err := f.call(t, events.OpSessionCreate, req, &resp); err != nil {
		t.Fatalf("create under the limit: %v", err)
	}
	if resp.SessionID != "busy-1" || resp.Duplicate {
		t.Fatalf("response %+v: the busy answer enqueued it", resp)
	}
	<-svc.creating
}
