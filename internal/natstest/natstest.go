// Package natstest runs real NATS servers with JetStream on disk for tests,
// and polls for conditions so tests never sleep.
package natstest

import (
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// RunServer starts an embedded nats-server with JetStream stored under a
// fresh t.TempDir(), on a random loopback port; it is shut down when the
// test ends.
func RunServer(t testing.TB) *server.Server {
	t.Helper()
	return RunServerWithOptions(t, Options(t.TempDir()))
}

// Options are the test server options with JetStream in storeDir.
func Options(storeDir string) *server.Options {
	return &server.Options{
		Host:      "127.0.0.1",
		Port:      -1,
		NoLog:     true,
		NoSigs:    true,
		JetStream: true,
		StoreDir:  storeDir,
		// Tests make many small streams; keep the limits generous.
		JetStreamMaxMemory: 256 << 20,
		JetStreamMaxStore:  4 << 30,
	}
}

// RunServerWithOptions starts a server with opts and waits until it takes
// connections.
func RunServerWithOptions(t testing.TB, opts *server.Options) *server.Server {
	t.Helper()
	s, err := server.NewServer(opts)
	if err != nil {
		t.Fatalf("nats server: %v", err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		// Say which listener is missing: a cluster port taken by another
		// socket leaves the route listener nil.
		client, route := s.Addr() != nil, opts.Cluster.Port == 0 || s.ClusterAddr() != nil
		s.Shutdown()
		t.Fatalf("nats server %q not ready after 10s: client listener up %v (port %d), route listener up %v (port %d)",
			opts.ServerName, client, opts.Port, route, opts.Cluster.Port)
	}
	t.Cleanup(func() {
		s.Shutdown()
		s.WaitForShutdown()
	})
	return s
}

// Connect opens a client connection to s, closed when the test ends.
func Connect(t testing.TB, s *server.Server, opts ...nats.Option) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(s.ClientURL(), opts...)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// CheckFor polls f every step until it returns nil or total passes, then
// fails the test with f's last error.
func CheckFor(t testing.TB, total, step time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(total)
	var err error
	for {
		if err = f(); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("condition not met after %v: %v", total, err)
		}
		time.Sleep(step)
	}
}
