package agent

import (
	"io"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/bai-sh/bai/internal/natstest"
)

// TestRunWaitsForJetStream: Run's set-up waits for a JetStream that is
// not there yet (a cluster electing, a node come back), logging each
// retry, and the agent gets ready once it is.
func TestRunWaitsForJetStream(t *testing.T) {
	dir := t.TempDir()
	natstest.CheckWaitsForJetStream(t, func(nc *nats.Conn, log io.Writer) (natstest.Service, error) {
		return New(Config{NC: nc, Log: zerolog.New(log), DataDir: dir, ID: "agent-a", Capacity: map[string]string{"cpu": "1", "mem": "1g"}, Sim: &SimConfig{}})
	})
}
