package registry

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"testing"

	"github.com/rs/zerolog"
	bolt "go.etcd.io/bbolt"

	"github.com/bai-sh/bai/pkg/events"
)

// TestUsage: session.usage counts a key's unfinished sessions, its pending
// ones and the sum of their slots exactly, past any page size, as its
// sessions move (ERROR and the final statuses release; a TERMINATING
// after ERROR counts again, as the status set says); a file made before
// the usage bucket gets it filled from its sessions.
func TestUsage(t *testing.T) {
	h := newHarness(t)
	svc, stop := h.start()
	const ak = "ak1"
	usage := func(req events.UsageRequest) events.UsageResponse {
		t.Helper()
		u, err := request[events.UsageResponse](t, h.nc, ak, events.OpSessionUsage, req)
		if err != nil {
			t.Fatalf("usage: %v", err)
		}
		return u
	}
	check := func(unfinished, pending int, slots map[string]string) {
		t.Helper()
		u := usage(events.UsageRequest{})
		if u.Unfinished != unfinished || u.Pending != pending || !maps.Equal(u.Slots, slots) || u.AppliedSeq < h.last {
			t.Fatalf("usage %+v, want %d unfinished, %d pending, %v, as of %d", u, unfinished, pending, slots, h.last)
		}
	}
	// The harness's sessions ask cpu=1 and mem "1073741824", which a
	// slots map reads as MiB (as the gateway's did): 1 PiB.
	held := func(n int) map[string]string {
		return map[string]string{"cpu": fmt.Sprint(n), "mem": fmt.Sprintf("%dp", n)}
	}
	check(0, 0, map[string]string{})

	// More than a list page: no query waits for the projection by hand, the
	// usage query catches up itself.
	const n = 1100
	for i := range n {
		h.enqueue(ak, fmt.Sprintf("s%d", i), "")
	}
	check(n, n, held(1100))
	h.lifecycle(ak, "s0", events.StatusRunning)
	h.lifecycle(ak, "s1", events.StatusCancelled)
	h.lifecycle(ak, "s2", events.StatusTerminated)
	// An agent reports only for a session placed on it: s3 runs first.
	h.lifecycle(ak, "s3", events.StatusRunning)
	h.event(ak, "s3", events.EventError)
	check(n-3, n-4, held(1097))
	h.event(ak, "s3", events.EventTerminating) // ERROR → TERMINATING: counted again
	check(n-2, n-4, held(1098))
	h.event(ak, "s3", events.EventTerminated)
	check(n-3, n-4, held(1097))
	// Another key's sessions are its own.
	h.enqueue("ak2", "x", "")
	check(n-3, n-4, held(1097))

	// MinSeq: as soon as that much is applied; past the log's end, busy.
	if u := usage(events.UsageRequest{MinSeq: h.last}); u.AppliedSeq < h.last || u.Unfinished != n-3 {
		t.Fatalf("usage at %d: %+v", h.last, u)
	}
	// Known: a session the registry has, in any status.
	if u := usage(events.UsageRequest{SessionID: "s2"}); !u.Known {
		t.Error("s2 not known")
	}
	if u := usage(events.UsageRequest{SessionID: "nope"}); u.Known {
		t.Error("nope known")
	}

	// Bad requests change nothing and say why.
	for _, tc := range []struct {
		name, body, code string
	}{
		{"malformed", `{"session_id":`, events.CodeInvalid},
		{"bad id", `{"session_id":"a.b"}`, events.CodeInvalid},
		{"other key, not admin", `{"access_key":"ak2"}`, events.CodeForbidden},
	} {
		_, err := call[json.RawMessage](t, h.nc, ak, events.OpSessionUsage, []byte(tc.body))
		var ae *events.APIError
		if !errors.As(err, &ae) || ae.Code != tc.code || ae.Description == "" {
			t.Errorf("%s: %v, want code %s", tc.name, err, tc.code)
		}
	}
	check(n-3, n-4, held(1097))
	waitApplied(t, svc, h.last)
	stop()

	// A file without the usage bucket (made before it) gets it rebuilt.
	db, err := bolt.Open(h.path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *bolt.Tx) error { return tx.DeleteBucket(bucketUsage) }); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	st, err := openStore(h.path, true, zerolog.Nop(), "")
	if err != nil {
		t.Fatal(err)
	}
	u, err := st.usage(ak, "")
	if cerr := st.close(); cerr != nil {
		t.Fatal(cerr)
	}
	if err != nil || u.Unfinished != n-3 || !maps.Equal(u.Slots, held(1097)) {
		t.Fatalf("rebuilt usage %+v %v", u, err)
	}
}
