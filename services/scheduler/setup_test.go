package scheduler

import (
	"io"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/bai-sh/bai/internal/natstest"
)

// TestRunWaitsForJetStream: Run's set-up waits for a JetStream that is
// not there yet (a cluster electing, a node come back), logging each
// retry, and the scheduler gets ready once it is.
func TestRunWaitsForJetStream(t *testing.T) {
	natstest.CheckWaitsForJetStream(t, func(nc *nats.Conn, log io.Writer) (natstest.Service, error) {
		return New(Config{NC: nc, Log: zerolog.New(log)})
	})
}
