package streams

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/bai-sh/bai/internal/natstest"
	"github.com/bai-sh/bai/pkg/events"
)

// A guarded publish is stored only while its condition holds; a retried
// one (the same event id) is stored once; a bad event is refused before
// anything is sent.
func TestGuardedPublish(t *testing.T) {
	js, err := jetstream.New(natstest.Connect(t, natstest.RunServer(t)))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := Provision(ctx, js, Options{}); err != nil {
		t.Fatal(err)
	}
	ev := func(name events.Name) *events.Event {
		return &events.Event{V: events.Version, ID: events.NewID(), Name: name, Time: time.Now().UTC(),
			AccessKey: "AKA", SessionID: "s1", KernelID: "k1",
			Session: &events.SessionSpec{ID: "s1", AccessKey: "AKA", Image: "python:3.11", MainKernelID: "k1",
				ScalingGroup: "default", Slots: map[string]string{"cpu": "1"}, Type: events.TypeInteractive}}
	}
	first := ev(events.EventEnqueued)
	ack, err := Publish(ctx, js, first, OnSession("AKA", "s1", 0))
	if err != nil {
		t.Fatal(err)
	}
	again, err := Publish(ctx, js, first, Guard{})
	if err != nil || !again.Duplicate || again.Sequence != ack.Sequence {
		t.Fatalf("a retry: %+v, %v", again, err)
	}
	if _, err := Publish(ctx, js, ev(events.EventEnqueued), OnSession("AKA", "s1", 0)); !IsWrongLastSequence(err) {
		t.Fatalf("a second first event: %v", err)
	}
	cancel := ev(events.EventCancelled)
	cancel.Session = nil
	f, err := PublishAsync(js, cancel, OnSession("AKA", "s1", ack.Sequence))
	if err != nil {
		t.Fatal(err)
	}
	select {
	case a := <-f.Ok():
		if a.Sequence <= ack.Sequence {
			t.Fatalf("stored at %d", a.Sequence)
		}
	case err := <-f.Err():
		t.Fatal(err)
	case <-time.After(10 * time.Second):
		t.Fatal("no acknowledgement")
	}
	if _, err := Publish(ctx, js, ev(events.EventCancelled), OnSession("AKA", "s1", ack.Sequence)); !IsWrongLastSequence(err) {
		t.Fatalf("a stale decision: %v", err)
	}
	bad := ev(events.EventCancelled)
	bad.SessionID = "no.dots"
	if _, err := Publish(ctx, js, bad, Guard{}); err == nil || IsWrongLastSequence(err) {
		t.Fatalf("a bad event: %v", err)
	}
	// The ledger's guard: the event's own subject.
	ledger := func() *events.Event {
		return &events.Event{V: events.Version, ID: events.NewID(), Name: events.EventAgentLedger, Time: time.Now().UTC(),
			AccessKey: events.LedgerOwner, SessionID: "agent-a", AgentID: "agent-a"}
	}
	la, err := Publish(ctx, js, ledger(), Guard{OwnSubject: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Publish(ctx, js, ledger(), Guard{OwnSubject: true}); !IsWrongLastSequence(err) {
		t.Fatalf("a stale ledger entry: %v", err)
	}
	if _, err := Publish(ctx, js, ledger(), Guard{OwnSubject: true, Seq: la.Sequence}); err != nil {
		t.Fatal(err)
	}
	if a, b := events.NewID(), events.NewID(); a == b || !events.ValidToken(a) {
		t.Fatalf("ids %q %q", a, b)
	}
}
