package main

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/bai-sh/bai/internal/natstest"
	"github.com/bai-sh/bai/pkg/events/streams"
)

// TestWaitsForNATS: bai-agent started before its NATS server is up waits
// (a log line per attempt), then beats; stopped, it returns cleanly.
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
		done <- run(ctx, []string{"--nats", fmt.Sprintf("nats://127.0.0.1:%d", port), "--data-dir", t.TempDir(),
			"--id", "agent-wait", "--no-sandbox"}, logs)
	}()
	natstest.CheckFor(t, 20*time.Second, 20*time.Millisecond, func() error {
		if n := strings.Count(logs.String(), "nats_not_ready_waiting"); n < 2 {
			return fmt.Errorf("%d waiting lines logged", n)
		}
		return nil
	})
	opts := natstest.Options(t.TempDir())
	opts.Port = port
	js, err := jetstream.New(natstest.Connect(t, natstest.RunServerWithOptions(t, opts)))
	if err != nil {
		t.Fatal(err)
	}
	natstest.CheckFor(t, 30*time.Second, 50*time.Millisecond, func() error {
		kv, err := js.KeyValue(ctx, streams.Agents)
		if err != nil {
			return err
		}
		_, err = kv.Get(ctx, "agent-wait")
		return err
	})
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the agent did not stop")
	}
}
