package registry

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/bai-sh/bai/internal/natstest"
	"github.com/bai-sh/bai/pkg/events"
	"github.com/bai-sh/bai/pkg/events/streams"
)

// TestLostDeliveriesAreReadAgain: messages of the session log delivered
// on the registry's consumer but lost on the way (in the cluster test, a
// reconnect during a leader change; here another client pulls from the
// registry's own consumer and keeps what it gets) are read again: the
// registry sees the gap in the log's sequence and makes its consumer
// again from what it applied, where its one ack for a later message
// (AckAll) would have acknowledged them unseen and the sessions would
// never be known.
func TestLostDeliveriesAreReadAgain(t *testing.T) {
	h := newHarness(t)
	svc, _ := h.start()
	waitApplied(t, svc, h.enqueue("ak1", "s0", "n0"))

	cons, err := h.js.Consumer(context.Background(), streams.Sessions, DefaultDurable)
	if err != nil {
		t.Fatal(err)
	}
	// A pull request queued behind the registry's own (1,024 messages at
	// most): it gets the messages past those.
	stolen := make(chan []string, 1)
	go func() {
		var ids []string
		b, err := cons.Fetch(5, jetstream.FetchMaxWait(20*time.Second))
		if err == nil {
			for m := range b.Messages() {
				ev, err := events.Decode(m.Subject(), m.Data())
				if err == nil {
					ids = append(ids, ev.SessionID)
				}
			}
		}
		stolen <- ids
	}()
	natstest.CheckFor(t, 10*time.Second, 5*time.Millisecond, func() error {
		info, err := cons.Info(context.Background())
		if err != nil {
			return err
		}
		if info.NumWaiting < 2 {
			return fmt.Errorf("%d pull requests waiting, want the registry's and ours", info.NumWaiting)
		}
		return nil
	})
	const n = 3000
	var last uint64
	for i := range n {
		last = h.enqueue("ak1", fmt.Sprintf("s%d", i+1), "")
	}
	ids := <-stolen
	if len(ids) == 0 {
		t.Skip("the competing pull got no message: nothing was lost")
	}
	t.Logf("deliveries lost on the way: %v", ids)
	waitApplied(t, svc, last)
	for _, sid := range ids {
		if info, err := request[events.SessionInfo](t, h.nc, "ak1", events.OpSessionGet, events.GetRequest{Ref: sid}); err != nil {
			t.Errorf("session %s, delivered and lost on the way: %v", sid, err)
		} else if info.Status != events.StatusPending {
			t.Errorf("session %s: %s", sid, info.Status)
		}
	}
}
