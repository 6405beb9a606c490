package main

import (
	"context"
	"io"
	"strings"
	"testing"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/bai-sh/bai/internal/natstest"
	"github.com/bai-sh/bai/pkg/events/streams"
)

// TestWaitsForNATS: bai-scheduler started before its NATS server is up
// waits (a log line per attempt), then takes the leadership; stopped, it
// returns cleanly. A bad replica count is refused before anything starts.
func TestWaitsForNATS(t *testing.T) {
	if err := run(context.Background(), []string{"--replicas", "-1"}, &natstest.SyncBuffer{}); err == nil || !strings.Contains(err.Error(), "--replicas") {
		t.Fatalf("bad --replicas: %v", err)
	}
	var js jetstream.JetStream
	natstest.CheckWaitsForNATS(t, "bai-scheduler", func(ctx context.Context, url string, log io.Writer) error {
		return run(ctx, []string{"--nats", url}, log)
	}, func(ctx context.Context, ns *server.Server, _ string) error {
		if js == nil {
			js, _ = jetstream.New(natstest.Connect(t, ns))
		}
		kv, err := js.KeyValue(ctx, streams.Leases)
		if err != nil {
			return err
		}
		_, err = kv.Get(ctx, "scheduler")
		return err
	})
}
