package gateway

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/bai-sh/bai/internal/natstest"
	"github.com/bai-sh/bai/pkg/events"
)

// BenchmarkVerify is the callout's check of one secret: a KV get and a
// keyed hash.
func BenchmarkVerify(b *testing.B) {
	keys, _ := openKeys(b)
	kp, secret, err := keys.Add(context.Background(), NewKeypair{})
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := keys.Verify(context.Background(), kp.AccessKey, secret); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkAdmissionLease is what serializing one admission across
// gateways costs a create of a key with a policy: a KV create and a
// revision-checked delete.
func BenchmarkAdmissionLease(b *testing.B) {
	nc := natstest.Connect(b, natstest.RunServer(b))
	js, _ := jetstream.New(nc)
	q, err := newQuotas(context.Background(), nc, js, 0)
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		release, err := q.serialize(context.Background(), "AKIABENCHLEASE000000")
		if err != nil {
			b.Fatal(err)
		}
		release()
	}
}

// BenchmarkExecute is an execute into a running session, request to
// answer: the gateway's look-ups of the session on the log, then the
// session_execute_request stored. The agent cannot start the execution
// before that store, so all of it is on an exec's path.
func BenchmarkExecute(b *testing.B) {
	f := start(b, func(c *Config) { c.IdleTimeout = -1 })
	f.running(b, "s1")
	// The key's own connection, as a client's: one reply subscription
	// for all its requests.
	nc, err := nats.Connect(f.nc.ConnectedUrl(), nats.CustomInboxPrefix(events.InboxPrefix(ak)))
	if err != nil {
		b.Fatal(err)
	}
	defer nc.Close()
	subj, _ := events.APISubject(ak, events.OpSessionExecute)
	i := 0
	for b.Loop() {
		i++
		data, _ := json.Marshal(events.ExecuteRequest{SessionID: "s1", Run: events.RunSpec{ID: fmt.Sprintf("r%d", i), Code: "print(1)"}})
		msg, err := nc.Request(subj, data, 5*time.Second)
		if err != nil {
			b.Fatal(err)
		}
		if err := events.ErrorFromHeader(map[string][]string(msg.Header)); err != nil {
			b.Fatal(err)
		}
	}
}
