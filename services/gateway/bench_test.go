package gateway

import (
	"context"
	"testing"
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
