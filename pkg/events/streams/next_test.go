package streams

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/bai-sh/bai/internal/natstest"
)

// TestNextReadsOnPastItsRechecks: Next returns every message in order,
// one that comes after its first rechecks too (the timeout of a short
// wait is never an error), and ends with the context or the iterator.
func TestNextReadsOnPastItsRechecks(t *testing.T) {
	ctx := context.Background()
	js, err := jetstream.New(natstest.Connect(t, natstest.RunServer(t)))
	if err != nil {
		t.Fatal(err)
	}
	st, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "T", Subjects: []string{"t.>"}})
	if err != nil {
		t.Fatal(err)
	}
	cons, err := st.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{Durable: "c", AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		t.Fatal(err)
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(4), FollowHeartbeat, FollowExpiry)
	if err != nil {
		t.Fatal(err)
	}
	defer it.Stop()
	want := 0
	read := func(c context.Context) error {
		msg, err := Next(c, it)
		if err != nil {
			return err
		}
		if got := string(msg.Data()); got != fmt.Sprint(want) {
			return fmt.Errorf("message %q, want %d", got, want)
		}
		want++
		return msg.Ack()
	}
	// More than the iterator buffers, at once.
	for i := range 10 {
		if _, err := js.Publish(ctx, "t.a", []byte(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	for range 10 {
		if err := read(ctx); err != nil {
			t.Fatal(err)
		}
	}
	// One that comes well after the recheck.
	time.AfterFunc(5*recheckAfter, func() { _, _ = js.Publish(ctx, "t.a", []byte("10")) })
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := read(wctx); err != nil {
		t.Fatalf("a message after the recheck: %v", err)
	}
	// One that comes after them all, in the long wait.
	time.AfterFunc(2*recheckUntil+recheckAfter, func() { _, _ = js.Publish(ctx, "t.a", []byte("11")) })
	if err := read(wctx); err != nil {
		t.Fatalf("a message after every recheck: %v", err)
	}
	// The context ends the wait.
	cctx, cancel2 := context.WithTimeout(ctx, 3*recheckAfter)
	defer cancel2()
	if err := read(cctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("with the context ended: %v", err)
	}
	// So does the iterator's.
	time.AfterFunc(3*recheckAfter, it.Stop)
	if err := read(ctx); !errors.Is(err, jetstream.ErrMsgIteratorClosed) {
		t.Fatalf("with the iterator stopped: %v", err)
	}
}
