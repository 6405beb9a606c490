package gateway

import (
	"testing"

	"github.com/rs/zerolog"

	"github.com/bai-sh/bai/internal/natstest"
)

// TestRunWaitsForJetStream: Run's set-up waits for a JetStream that is
// not there yet (a cluster electing, a node come back), logging each
// retry, and the gateway gets ready once it is.
func TestRunWaitsForJetStream(t *testing.T) {
	ns := natstest.RunServerWithoutJetStream(t)
	log := &natstest.SyncBuffer{}
	svc, err := New(Config{NC: natstest.Connect(t, ns.Server), Log: zerolog.New(log)})
	if err != nil {
		t.Fatal(err)
	}
	natstest.CheckWaitsForJetStream(t, ns, log, svc.Run, svc.Ready())
}
