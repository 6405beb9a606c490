package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/bai-sh/bai/internal/natstest"
	"github.com/bai-sh/bai/pkg/events"
)

// TestWaitsForNATS: bai-registry started before its NATS server is up
// waits (a log line per attempt), then answers queries; stopped, it
// returns cleanly.
func TestWaitsForNATS(t *testing.T) {
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
		done <- run(ctx, []string{"--nats", fmt.Sprintf("nats://127.0.0.1:%d", port), "--db", filepath.Join(t.TempDir(), "registry.db")}, logs)
	}()
	natstest.CheckFor(t, 20*time.Second, 20*time.Millisecond, func() error {
		if n := strings.Count(logs.String(), "nats_not_ready_waiting"); n < 2 {
			return fmt.Errorf("%d waiting lines logged", n)
		}
		return nil
	})
	opts := natstest.Options(t.TempDir())
	opts.Port = port
	nc := natstest.Connect(t, natstest.RunServerWithOptions(t, opts), nats.CustomInboxPrefix(events.InboxPrefix("AKTEST")))
	natstest.CheckFor(t, 30*time.Second, 50*time.Millisecond, func() error {
		msg, err := nc.Request("bai.api.AKTEST.session.list", []byte("{}"), time.Second)
		if err != nil {
			return err
		}
		var resp events.ListResponse
		if err := json.Unmarshal(msg.Data, &resp); err != nil {
			return fmt.Errorf("list answer %q: %v", msg.Data, err)
		}
		return nil
	})
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the registry did not stop")
	}
}
