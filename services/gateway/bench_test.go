package gateway

import (
	"context"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/bai-sh/bai/internal/natstest"
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
