package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
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
	var nc *nats.Conn
	natstest.CheckWaitsForNATS(t, "bai-gateway", func(ctx context.Context, url string, log io.Writer) error {
		return run(ctx, []string{"--nats", url, "--idle-timeout", "-1s", "--insecure-no-auth"}, log)
	}, func(ctx context.Context, ns *server.Server, log string) error {
		if nc == nil {
			nc = natstest.Connect(t, ns, nats.CustomInboxPrefix(events.InboxPrefix("AKTEST")))
		}
		msg, err := nc.Request("bai.api.AKTEST.image.list", nil, time.Second)
		if err != nil {
			return err
		}
		var resp events.ImageListResponse
		if err := json.Unmarshal(msg.Data, &resp); err != nil || len(resp.Images) == 0 {
			return fmt.Errorf("image list %q: %v", msg.Data, err)
		}
		// It answers image.list before it has finished starting.
		if !strings.Contains(log, "gateway_ready") {
			return errors.New("not ready yet")
		}
		return nil
	})
}
