package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/bai-sh/bai/internal/natstest"
	"github.com/bai-sh/bai/pkg/events"
)

// TestWaitsForNATS: bai-registry started before its NATS server is up
// waits (a log line per attempt), then answers queries; stopped, it
// returns cleanly.
func TestWaitsForNATS(t *testing.T) {
	db := filepath.Join(t.TempDir(), "registry.db")
	var nc *nats.Conn
	natstest.CheckWaitsForNATS(t, "bai-registry", func(ctx context.Context, url string, log io.Writer) error {
		return run(ctx, []string{"--nats", url, "--db", db}, log)
	}, func(ctx context.Context, ns *server.Server, _ string) error {
		if nc == nil {
			nc = natstest.Connect(t, ns, nats.CustomInboxPrefix(events.InboxPrefix("AKTEST")))
		}
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
}
