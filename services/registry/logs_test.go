package registry

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/bai-sh/bai/pkg/events"
)

func (h *harness) output(ak, sid, run, stream string, data []byte) {
	h.t.Helper()
	h.outputN(ak, sid, run, stream, 0, string(data))
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

// outputN publishes one output message, numbered n (events.HeaderChunk)
// as the agent does unless n is 0.
func (h *harness) outputN(ak, sid, run, stream string, n int, data string) {
	h.t.Helper()
	subj, err := events.OutputSubject(ak, sid, run)
	if err != nil {
		h.t.Fatal(err)
	}
	m := nats.NewMsg(subj)
	m.Header.Set(events.HeaderStream, stream)
	if n != 0 {
		m.Header.Set(events.HeaderChunk, strconv.Itoa(n))
	}
	m.Data = []byte(data)
	if _, err := h.js.PublishMsg(context.Background(), m); err != nil {
		h.t.Fatal(err)
	}
}

// A chunk the log stored after later ones (the agent sent it again after
// its acknowledgement was lost) is put back in place in logs; a run still
// going, whose earlier chunk is still missing, shows what it has in order.
func TestLogsPutALateChunkBackInPlace(t *testing.T) {
	h := newHarness(t)
	h.start()
	h.enqueue("AK", "s1", "one")
	h.outputN("AK", "s1", "r1", events.StreamStdout, 1, "a")
	h.outputN("AK", "s1", "r1", events.StreamStdout, 3, "c")
	h.outputN("AK", "s1", "r1", events.StreamStderr, 1, "E")
	h.outputN("AK", "s1", "r1", events.StreamStdout, 2, "b")
	h.output("AK", "s1", "r1", events.StreamExit, []byte("0"))
	h.outputN("AK", "s1", "r2", events.StreamStdout, 2, "y") // r2 runs, its 1 not stored yet
	h.outputN("AK", "s1", "r2", events.StreamStdout, 3, "z")

	resp, err := request[events.LogsResponse](t, h.nc, "AK", events.OpSessionLogs, events.GetRequest{Ref: "one"})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, c := range resp.Chunks {
		got = append(got, c.RunID+":"+c.Stream+":"+c.Data)
	}
	want := []string{"r1:stdout:a", "r1:stderr:E", "r1:stdout:b", "r1:stdout:c", "r1:exit:", "r2:stdout:y", "r2:stdout:z"}
	if !slices.Equal(got, want) {
		t.Fatalf("logs:\n got %v\nwant %v", got, want)
	}
}

// Output stored after the session's end is not the session's (a kernel
// of an agent declared lost, running on until the agent learns it): logs
// leave it out, exit included; what came before the end stays.
func TestLogsLeaveOutOutputAfterTheEnd(t *testing.T) {
	h := newHarness(t)
	h.start()
	h.enqueue("AK", "s1", "one")
	h.lifecycle("AK", "s1", events.StatusRunning)
	h.outputN("AK", "s1", "r1", events.StreamStdout, 1, "before ")
	lost := func(e *events.Event) { e.Reason = events.ReasonAgentLost }
	h.event("AK", "s1", events.EventError, lost)
	h.event("AK", "s1", events.EventTerminated, lost)
	h.outputN("AK", "s1", "r1", events.StreamStdout, 2, "after")
	h.output("AK", "s1", "r1", events.StreamExit, []byte("0"))

	resp, err := request[events.LogsResponse](t, h.nc, "AK", events.OpSessionLogs, events.GetRequest{Ref: "one"})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, c := range resp.Chunks {
		got = append(got, c.RunID+":"+c.Stream+":"+c.Data)
	}
	if want := []string{"r1:stdout:before "}; !slices.Equal(got, want) {
		t.Fatalf("logs of a session ended before its kernel stopped:\n got %v\nwant %v", got, want)
	}
}
