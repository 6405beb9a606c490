package main

import (
	"context"
	"io"
	"testing"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/bai-sh/bai/internal/natstest"
	"github.com/bai-sh/bai/pkg/events/streams"
)

// TestWaitsForNATS: bai-agent started before its NATS server is up waits
// (a log line per attempt), then beats; stopped, it returns cleanly.
func TestWaitsForNATS(t *testing.T) {
	dir := t.TempDir()
	var js jetstream.JetStream
	natstest.CheckWaitsForNATS(t, "bai-agent", func(ctx context.Context, url string, log io.Writer) error {
		return run(ctx, []string{"--nats", url, "--data-dir", dir, "--id", "agent-wait", "--no-sandbox"}, log)
	}, func(ctx context.Context, ns *server.Server, _ string) error {
		if js == nil {
			js, _ = jetstream.New(natstest.Connect(t, ns))
		}
		kv, err := js.KeyValue(ctx, streams.Agents)
		if err != nil {
			return err
		}
		_, err = kv.Get(ctx, "agent-wait")
		return err
	})
}
