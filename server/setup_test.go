package server

import (
	"io"
	"path/filepath"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/bai-sh/bai/internal/natstest"
	"github.com/bai-sh/bai/services/agent"
	"github.com/bai-sh/bai/services/gateway"
	"github.com/bai-sh/bai/services/registry"
	"github.com/bai-sh/bai/services/scheduler"
)

// TestServicesWaitForJetStream: each service's Run set-up waits for a
// JetStream that is not there yet (a cluster electing, a node come back),
// logging each retry, and the service gets ready once it is
// (natstest.CheckWaitsForJetStream).
func TestServicesWaitForJetStream(t *testing.T) {
	for name, newService := range map[string]func(t *testing.T, nc *nats.Conn, log zerolog.Logger) (natstest.Service, error){
		"gateway": func(_ *testing.T, nc *nats.Conn, log zerolog.Logger) (natstest.Service, error) {
			return gateway.New(gateway.Config{NC: nc, Log: log})
		},
		"scheduler": func(_ *testing.T, nc *nats.Conn, log zerolog.Logger) (natstest.Service, error) {
			return scheduler.New(scheduler.Config{NC: nc, Log: log})
		},
		"registry": func(t *testing.T, nc *nats.Conn, log zerolog.Logger) (natstest.Service, error) {
			return registry.New(registry.Config{NC: nc, Log: log, Path: filepath.Join(t.TempDir(), "registry.db")})
		},
		"agent": func(t *testing.T, nc *nats.Conn, log zerolog.Logger) (natstest.Service, error) {
			return agent.New(agent.Config{NC: nc, Log: log, DataDir: t.TempDir(), ID: "agent-a",
				Capacity: map[string]string{"cpu": "1", "mem": "1g"}, Sim: &agent.SimConfig{}})
		},
	} {
		t.Run(name, func(t *testing.T) {
			natstest.CheckWaitsForJetStream(t, func(nc *nats.Conn, log io.Writer) (natstest.Service, error) {
				return newService(t, nc, zerolog.New(log))
			})
		})
	}
}
