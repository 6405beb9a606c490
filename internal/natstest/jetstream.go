package natstest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// NoJetStream is a test server whose JetStream is not there yet: what a
// service sees of a cluster electing, or of a node come back before its
// stores. Enable brings JetStream up on it.
type NoJetStream struct {
	*server.Server
	dir string
}

// RunServerWithoutJetStream starts a NoJetStream server.
func RunServerWithoutJetStream(t testing.TB) *NoJetStream {
	t.Helper()
	dir := t.TempDir()
	opts := Options(dir)
	opts.JetStream = false
	return &NoJetStream{Server: RunServerWithOptions(t, opts), dir: dir}
}

// Enable starts JetStream on the server.
func (s *NoJetStream) Enable(t testing.TB) {
	t.Helper()
	if err := s.EnableJetStream(&server.JetStreamConfig{StoreDir: s.dir, MaxMemory: 256 << 20, MaxStore: 1 << 30}); err != nil {
		t.Fatal(err)
	}
}

// Service is what CheckWaitsForJetStream runs: a bai service.
type Service interface {
	Run(context.Context) error
	Ready() <-chan struct{}
}

// CheckWaitsForJetStream makes a service with newService on a connection
// to a server whose JetStream is not there yet (RunServerWithoutJetStream)
// and runs it: Run neither returns nor gets ready while JetStream is not
// there, and logs each retry (jetstream_not_ready_retrying); once
// JetStream is enabled it gets ready, and a stop ends it cleanly.
func CheckWaitsForJetStream(t *testing.T, newService func(nc *nats.Conn, log io.Writer) (Service, error)) {
	t.Helper()
	ns := RunServerWithoutJetStream(t)
	log := &SyncBuffer{}
	svc, err := newService(Connect(t, ns.Server), log)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx) }()
	CheckFor(t, 30*time.Second, 20*time.Millisecond, func() error {
		select {
		case err := <-done:
			t.Fatalf("Run returned while JetStream was not there: %v", err)
		case <-svc.Ready():
			t.Fatal("ready without JetStream")
		default:
		}
		if n := strings.Count(log.String(), "jetstream_not_ready_retrying"); n < 2 {
			return fmt.Errorf("%d retries logged", n)
		}
		return nil
	})
	ns.Enable(t)
	select {
	case <-svc.Ready():
	case err := <-done:
		t.Fatalf("Run returned: %v", err)
	case <-time.After(60 * time.Second):
		t.Fatalf("not ready a minute after JetStream came:\n%s", log.String())
	}
	cancel()
	if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
		t.Fatalf("stop: %v", err)
	}
}
