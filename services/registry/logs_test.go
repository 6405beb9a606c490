package registry

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/bai-sh/bai/pkg/events"
)

func (h *harness) output(ak, sid, run, stream string, data []byte) {
	h.t.Helper()
	subj, err := events.OutputSubject(ak, sid, run)
	if err != nil {
		h.t.Fatal(err)
	}
	m := nats.NewMsg(subj)
	m.Header.Set(events.HeaderStream, stream)
	m.Data = data
	if _, err := h.js.PublishMsg(context.Background(), m); err != nil {
		h.t.Fatal(err)
	}
}

// logs returns the output of a session in order, its own only, and keeps
// the newest when it is too big for one reply.
func TestLogs(t *testing.T) {
	h := newHarness(t)
	h.start()
	h.enqueue("AK", "s1", "one")
	h.enqueue("AK", "s2", "two")
	h.enqueue("BK", "s1", "other")
	h.output("AK", "s1", "r1", events.StreamStdout, []byte("hello "))
	h.output("AK", "s2", "r1", events.StreamStdout, []byte("not mine"))
	h.output("BK", "s1", "r1", events.StreamStdout, []byte("not mine either"))
	h.output("AK", "s1", "r1", events.StreamStderr, []byte("oops\n"))
	h.output("AK", "s1", "r1", events.StreamExit, []byte("3"))

	resp, err := request[events.LogsResponse](t, h.nc, "AK", events.OpSessionLogs, events.GetRequest{Ref: "one"})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Chunks) != 3 || resp.SessionID != "s1" || resp.Chunks[0].Data != "hello " || resp.Chunks[1].Stream != events.StreamStderr ||
		resp.Chunks[2].ExitCode == nil || *resp.Chunks[2].ExitCode != 3 || resp.Truncated {
		t.Fatalf("logs: %+v", resp)
	}
	if resp, err := request[events.LogsResponse](t, h.nc, "AK", events.OpSessionLogs, events.GetRequest{Ref: "s3"}); !errors.Is(err, events.ErrNotFound) {
		t.Fatalf("logs of an unknown session: %+v %v", resp, err)
	}
	empty, err := request[events.LogsResponse](t, h.nc, "BK", events.OpSessionLogs, events.GetRequest{Ref: "s1"})
	if err != nil || len(empty.Chunks) != 1 || empty.Chunks[0].Data != "not mine either" {
		t.Fatalf("BK's logs: %+v %v", empty, err)
	}

	// Too much output: the oldest goes.
	big := bytes.Repeat([]byte("x"), 300<<10)
	for _, c := range "abc" {
		big[0] = byte(c)
		h.output("AK", "s2", "r2", events.StreamStdout, big)
	}
	resp, err = request[events.LogsResponse](t, h.nc, "AK", events.OpSessionLogs, events.GetRequest{Ref: "s2"})
	if err != nil {
		t.Fatal(err)
	}
	if !resp.Truncated || len(resp.Chunks) != 2 || !strings.HasPrefix(resp.Chunks[0].Data, "b") || !strings.HasPrefix(resp.Chunks[1].Data, "c") {
		t.Fatalf("truncated logs: %d chunks, truncated %v", len(resp.Chunks), resp.Truncated)
	}
}
