package natstest

import (
	"context"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// CheckWaitsForNATS checks a service binary started before its NATS
// server is up: run (the binary's run, given the URL of a free port and
// its log) neither returns nor fails while nothing listens and logs
// nats_not_ready_waiting per attempt; once a server with JetStream is up
// on the port, up (given it) succeeds within 30 s; cancelled, run returns
// nil.
func CheckWaitsForNATS(t *testing.T, name string, run func(ctx context.Context, url string, log io.Writer) error,
	up func(ctx context.Context, ns *server.Server, log string) error) {
	t.Helper()
	port := FreePorts(t, 1)[0]
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	logs := &SyncBuffer{}
	done := make(chan error, 1)
	go func() { done <- run(ctx, fmt.Sprintf("nats://127.0.0.1:%d", port), logs) }()
	CheckFor(t, 20*time.Second, 20*time.Millisecond, func() error {
		select {
		case err := <-done:
			t.Fatalf("%s gave up without NATS: %v\n%s", name, err, logs.String())
		default:
		}
		if n := strings.Count(logs.String(), "nats_not_ready_waiting"); n < 2 {
			return fmt.Errorf("%d waiting lines logged", n)
		}
		return nil
	})
	opts := Options(t.TempDir())
	opts.Port = port
	ns := RunServerWithOptions(t, opts)
	CheckFor(t, 30*time.Second, 50*time.Millisecond, func() error { return up(ctx, ns, logs.String()) })
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("%s: run: %v\n%s", name, err, logs.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("%s did not stop", name)
	}
}
