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

// TestWaitsForNATS: bai-scheduler started before its NATS server is up
// waits (a log line per attempt), then takes the leadership; stopped, it
// returns cleanly.
func TestWaitsForNATS(t *testing.T) {
	if err := run(context.Background(), []string{"--replicas", "-1"}, &natstest.SyncBuffer{}); err == nil || !strings.Contains(err.Error(), "--replicas") {
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
	go func() { done <- run(ctx, []string{"--nats", fmt.Sprintf("nats://127.0.0.1:%d", port)}, logs) }()
	natstest.CheckFor(t, 20*time.Second, 20*time.Millisecond, func() error {
		if n := strings.Count(logs.String(), "nats_not_ready_waiting"); n < 2 {
			return fmt.Errorf("%d waiting lines logged", n)
		}
		return nil
	})
	opts := natstest.Options(t.TempDir())
	opts.Port = port
	ns := natstest.RunServerWithOptions(t, opts)
	js, err := jetstream.New(natstest.Connect(t, ns))
	if err != nil {
		t.Fatal(err)
	}
	natstest.CheckFor(t, 30*time.Second, 50*time.Millisecond, func() error {
		kv, err := js.KeyValue(ctx, streams.Leases)
		if err != nil {
			return err
		}
		_, err = kv.Get(ctx, "scheduler")
		return err
	})
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the scheduler did not stop")
	}
}
