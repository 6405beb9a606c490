package server

import (
	"context"
	"testing"

	"github.com/bai-sh/bai/pkg/events"
	"github.com/bai-sh/bai/tools/bai/client"
)

// BenchmarkTenantConnect is one bai connection through the auth callout:
// TCP, CONNECT, the callout's KV lookup and hash check, the signed JWT.
func BenchmarkTenantConnect(b *testing.B) {
	srv, err := New(Config{DataDir: b.TempDir(), Listen: "127.0.0.1:-1", AgentCapacity: map[string]string{"cpu": "1", "mem": "1g"}})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	defer func() { cancel(); <-done }()
	<-srv.Ready()
	c := srv.Credentials()
	admin, err := client.Connect(ctx, client.Options{URL: srv.ClientURL(), AccessKey: c.AccessKey, SecretKey: c.SecretKey})
	if err != nil {
		b.Fatal(err)
	}
	kp, err := admin.AddKeypair(ctx, events.KeypairAddRequest{})
	admin.Close()
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for b.Loop() {
		cl, err := client.Connect(ctx, client.Options{URL: srv.ClientURL(), AccessKey: kp.AccessKey, SecretKey: kp.SecretKey})
		if err != nil {
			b.Fatal(err)
		}
		cl.Close()
	}
}
