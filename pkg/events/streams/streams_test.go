package streams

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/bai-sh/bai/internal/natstest"
	"github.com/bai-sh/bai/pkg/events"
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
	if got := st.CachedInfo().Config; got.MaxAge != 30*24*time.Hour || got.RePublish == nil || got.Duplicates != 2*time.Minute {
		t.Fatalf("session stream config %+v", got)
	}
	before := created()
	if err := Provision(ctx, js, Options{SessionMaxAge: 60 * 24 * time.Hour}); err != nil {
		t.Fatal(err)
	}
	st, _ = js.Stream(ctx, Sessions)
	if st.CachedInfo().Config.MaxAge != 60*24*time.Hour || !created().Equal(before) {
		t.Fatalf("a raised option was not applied in place: %+v", st.CachedInfo().Config)
	}
	if _, err := js.KeyValue(ctx, Agents); err != nil {
		t.Fatalf("agents bucket: %v", err)
	}
	w, err := js.Stream(ctx, Work)
	if err != nil {
		t.Fatalf("work stream: %v", err)
	}
	workCreated := w.CachedInfo().Created
	if err := Provision(ctx, js, Options{SessionMaxAge: 60 * 24 * time.Hour}); err != nil {
		t.Fatal(err)
	}
	if w, _ = js.Stream(ctx, Work); !w.CachedInfo().Created.Equal(workCreated) || w.CachedInfo().Config.MaxConsumers != MaxAgentConsumers {
		t.Fatalf("work stream made again or wrong: %+v", w.CachedInfo().Config)
	}
}

// TestWorkQueueCopiesAgentWork: the server copies exactly the events
// addressed to an agent into the work queue, under the agent's one
// subject, with their origin, and no client can write there.
func TestWorkQueueCopiesAgentWork(t *testing.T) {
	ns := natstest.RunServer(t)
	nc := natstest.Connect(t, ns)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := Provision(ctx, js, Options{}); err != nil {
		t.Fatal(err)
	}
	pub := func(subj string) {
		t.Helper()
		if _, err := js.Publish(ctx, subj, []byte("{}")); err != nil {
			t.Fatal(err)
		}
	}
	pub("bai.session.AK.s1.session_enqueued")
	pub("bai.session.AK.s1.session_scheduled.agent-1")
	pub("bai.session._ledger.agent-1.agent_ledger")
	pub("bai.session.AK.s2.session_scheduled.agent-2")
	pub("bai.session.AK.s1.session_terminating.agent-1")
	if _, err := js.Publish(ctx, "bai.work.agent-1", []byte("{}")); err == nil {
		t.Fatal("a client published into the work queue")
	}
	w, _ := js.Stream(ctx, Work)
	natstest.CheckFor(t, 5*time.Second, 5*time.Millisecond, func() error {
		info, err := w.Info(ctx)
		if err != nil {
			return err
		}
		if info.State.Msgs != 3 {
			return fmt.Errorf("%d messages in the work queue", info.State.Msgs)
		}
		return nil
	})
	var origins []string
	for seq := uint64(1); seq <= 3; seq++ {
		m, err := w.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		agent := strings.TrimPrefix(m.Subject, "bai.work.")
		subj, err := events.WorkOrigin(m.Header.Get(events.WorkSourceHeader), agent)
		if err != nil {
			t.Fatal(err)
		}
		origins = append(origins, m.Subject+" "+subj)
	}
	want := []string{
		"bai.work.agent-1 bai.session.AK.s1.session_scheduled.agent-1",
		"bai.work.agent-2 bai.session.AK.s2.session_scheduled.agent-2",
		"bai.work.agent-1 bai.session.AK.s1.session_terminating.agent-1",
	}
	if !slices.Equal(origins, want) {
		t.Fatalf("work queue holds %q, want %q", origins, want)
	}
}

// TestProvisionUpgradesAnOlderSessionStream: a session log made by an
// earlier version (atomic publish on, no live copy) is updated in place.
func TestProvisionUpgradesAnOlderSessionStream(t *testing.T) {
	ns := natstest.RunServer(t)
	js, err := jetstream.New(natstest.Connect(t, ns))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	old := SessionStreamConfig(Options{})
	old.RePublish, old.AllowAtomicPublish = nil, true
	if _, err := js.CreateStream(ctx, old); err != nil {
		t.Fatal(err)
	}
	if err := Provision(ctx, js, Options{}); err != nil {
		t.Fatalf("provision over an older session stream: %v", err)
	}
	st, _ := js.Stream(ctx, Sessions)
	if cfg := st.CachedInfo().Config; cfg.AllowAtomicPublish || cfg.RePublish == nil || cfg.RePublish.Destination != events.LiveAllSessionsFilter {
		t.Fatalf("session stream not upgraded: %+v", cfg)
	}
}
