package streams

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/bai-sh/bai/internal/natstest"
)

func TestProvisionIsIdempotentAndUpdatesOnlyOnChange(t *testing.T) {
	ns := natstest.RunServer(t)
	js, err := jetstream.New(natstest.Connect(t, ns))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	created := func() time.Time {
		st, err := js.Stream(ctx, Sessions)
		if err != nil {
			t.Fatal(err)
		}
		return st.CachedInfo().Created
	}
	for range 3 {
		if err := Provision(ctx, js, Options{}); err != nil {
			t.Fatal(err)
		}
	}
	st, _ := js.Stream(ctx, Sessions)
	if got := st.CachedInfo().Config; got.MaxAge != 30*24*time.Hour || !got.AllowAtomicPublish || got.Duplicates != 2*time.Minute {
		t.Fatalf("session stream config %+v", got)
	}
	before := created()
	if err := Provision(ctx, js, Options{SessionMaxAge: time.Hour}); err != nil {
		t.Fatal(err)
	}
	st, _ = js.Stream(ctx, Sessions)
	if st.CachedInfo().Config.MaxAge != time.Hour || !created().Equal(before) {
		t.Fatalf("a changed option was not applied in place: %+v", st.CachedInfo().Config)
	}
	if _, err := js.KeyValue(ctx, Agents); err != nil {
		t.Fatalf("agents bucket: %v", err)
	}
}
