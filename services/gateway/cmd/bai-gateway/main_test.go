package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/bai-sh/bai/internal/natstest"
	"github.com/bai-sh/bai/pkg/events"
)

// TestWaitsForNATS: bai-gateway started before its NATS server is up
// waits (a log line per attempt) and then serves; stopped, it returns
// cleanly. A bad replica count is refused before anything starts.
func TestWaitsForNATS(t *testing.T) {
	if err := run(context.Background(), []string{"--replicas", "three"}, &natstest.SyncBuffer{}); err == nil || !strings.Contains(err.Error(), "--replicas") {
		t.Fatalf("bad --replicas: %v", err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	logs := &natstest.SyncBuffer{}
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"--nats", fmt.Sprintf("nats://127.0.0.1:%d", port), "--idle-timeout", "-1s", "--insecure-no-auth"}, logs)
	}()
	natstest.CheckFor(t, 20*time.Second, 20*time.Millisecond, func() error {
		if n := strings.Count(logs.String(), "nats_not_ready_waiting"); n < 2 {
			return fmt.Errorf("%d waiting lines logged", n)
		}
		return nil
	})
	select {
	case err := <-done:
		t.Fatalf("the gateway gave up without NATS: %v", err)
	default:
	}
	opts := natstest.Options(t.TempDir())
	opts.Port = port
	ns := natstest.RunServerWithOptions(t, opts)
	nc := natstest.Connect(t, ns, nats.CustomInboxPrefix(events.InboxPrefix("AKTEST")))
	natstest.CheckFor(t, 30*time.Second, 50*time.Millisecond, func() error {
		msg, err := nc.Request("bai.api.AKTEST.image.list", nil, time.Second)
		if err != nil {
			return err
		}
		var resp events.ImageListResponse
		if err := json.Unmarshal(msg.Data, &resp); err != nil || len(resp.Images) == 0 {
			return fmt.Errorf("image list %q: %v", msg.Data, err)
		}
		// It answers image.list before it has finished starting.
		if !strings.Contains(logs.String(), "gateway_ready") {
			return errors.New("not ready yet")
		}
		return nil
	})
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run: %v\n%s", err, logs.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the gateway did not stop")
	}
}
