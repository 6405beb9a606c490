package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/bai-sh/bai/internal/natstest"
	"github.com/bai-sh/bai/pkg/events"
	"github.com/bai-sh/bai/pkg/events/streams"
)

// TestWaitBatchRepublishesInOrder: from the first event of a batch whose
// publish failed or whose ack never came, waitBatch publishes again, in
// order, and the log keeps each event once.
func TestWaitBatchRepublishesInOrder(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	nc := natstest.Connect(t, natstest.RunServer(t))
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if err := streams.Provision(ctx, js, streams.Options{}); err != nil {
		t.Fatal(err)
	}
	s := &Service{js: js, log: zerolog.Nop(), id: "agent-1", epoch: 1}
	spec := &events.SessionSpec{ID: "s1", AccessKey: "AKTEST", MainKernelID: "k1"}
	k := newKernel(spec, phaseStarting, zerolog.Nop())

	var b eventBatch
	s.publishAsync(&b, k, events.EventPreparing, nil)
	s.publishAsync(&b, k, events.EventPrepared, nil)
	// The prepared event is in the log, but its ack is lost; the creating
	// event fails at once.
	<-b.futures[1].Ok()
	b.futures[1] = nil
	b.events = append(b.events, s.event(spec.AccessKey, spec.ID, spec.MainKernelID, events.EventCreating))
	b.futures = append(b.futures, nil)
	s.publishAsync(&b, k, events.EventKernelStarted, nil) // after a failure: not published yet
	if b.futures[3] != nil {
		t.Fatal("an event after a failed one was published at once")
	}
	if err := s.waitBatch(ctx, &b); err != nil {
		t.Fatal(err)
	}
	if len(b.events) != 0 || len(b.futures) != 0 {
		t.Fatal("batch not emptied")
	}

	filter, err := events.SessionFilter(spec.AccessKey, spec.ID)
	if err != nil {
		t.Fatal(err)
	}
	c, err := js.OrderedConsumer(ctx, streams.Sessions, jetstream.OrderedConsumerConfig{FilterSubjects: []string{filter}})
	if err != nil {
		t.Fatal(err)
	}
	mb, err := c.FetchNoWait(100)
	if err != nil {
		t.Fatal(err)
	}
	var got []events.Name
	for m := range mb.Messages() {
		var e events.Event
		if err := json.Unmarshal(m.Data(), &e); err != nil {
			t.Fatal(err)
		}
		got = append(got, e.Name)
	}
	want := []events.Name{events.EventPreparing, events.EventPrepared, events.EventCreating, events.EventKernelStarted}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("log %v, want %v", got, want)
	}
}
