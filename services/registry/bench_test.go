package registry

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/bai-sh/bai/pkg/events"
)

var benchLifecycle = []events.Name{
	events.EventEnqueued, events.EventScheduled, events.EventPreparing, events.EventPrepared,
	events.EventCreating, events.EventStarted, events.EventTerminating, events.EventTerminated,
}

// benchRecord is event i of the log: session i/len(names) goes through
// names in order.
func benchRecord(tb testing.TB, ak string, i int, names []events.Name) record {
	sid := fmt.Sprintf("s%08d", i/len(names))
	e := events.Event{
		V: events.Version, ID: fmt.Sprintf("e%09d", i), Name: names[i%len(names)],
		Time: t0.Add(time.Duration(i) * time.Millisecond), AccessKey: ak, SessionID: sid,
	}
	if events.AddressedToAgent(e.Name, "x") || e.Name.AgentReport() {
		e.AgentID = agentID
	}
	if e.Name == events.EventEnqueued || e.Name == events.EventScheduled {
		e.Session = &events.SessionSpec{
			ID: sid, Name: "bench-" + sid, AccessKey: ak, Image: "cr.backend.ai/python:3.11",
			Type: events.TypeBatch, Slots: map[string]string{"cpu": "1", "mem": "1073741824"},
			Domain: "default", Group: "default", ScalingGroup: "default", MainKernelID: sid + "-k0",
			CreatedAt: e.Time,
		}
	}
	subj, err := events.EventSubject(&e)
	if err != nil {
		tb.Fatal(err)
	}
	data, err := json.Marshal(&e)
	if err != nil {
		tb.Fatal(err)
	}
	return record{seq: uint64(i + 1), subject: subj, data: data}
}

func benchStore(tb testing.TB, noSync bool) *store {
	st, err := openStore(filepath.Join(tb.TempDir(), "registry.db"), noSync, zerolog.Nop(), "")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = st.close() })
	return st
}

// BenchmarkApply measures events applied into bbolt (with fsync), in
// batches of maxBatch, each session going through a whole lifecycle.
func BenchmarkApply(b *testing.B) {
	st := benchStore(b, false)
	recs := make([]record, b.N)
	for i := range recs {
		recs[i] = benchRecord(b, "ak1", i, benchLifecycle)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for batch := range slices.Chunk(recs, maxBatch) {
		out, _, err := st.applyBatch(batch)
		if err != nil {
			b.Fatal(err)
		}
		if out[0] != outApplied {
			b.Fatalf("outcome %d", out[0])
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
}

// BenchmarkList measures the first page of `ps` for a key with 100k
// sessions, all of them listed by default.
func BenchmarkList(b *testing.B) {
	const sessions = 100_000
	st := benchStore(b, true)
	names := []events.Name{events.EventEnqueued, events.EventScheduled}
	var recs []record
	for i := range sessions * len(names) {
		recs = append(recs, benchRecord(b, "ak1", i, names))
	}
	for batch := range slices.Chunk(recs, 2000) {
		if _, _, err := st.applyBatch(batch); err != nil {
			b.Fatal(err)
		}
	}
	statuses := slices.Sorted(slices.Values(events.DefaultListStatuses))
	b.ReportAllocs()
	for b.Loop() {
		resp, err := st.list("ak1", statuses, DefaultListLimit, 0)
		if err != nil {
			b.Fatal(err)
		}
		if resp.Total != sessions || len(resp.Sessions) != DefaultListLimit {
			b.Fatalf("total %d, %d sessions", resp.Total, len(resp.Sessions))
		}
	}
}

// BenchmarkGetPending measures get of the newest of 10,000 pending
// sessions: the directory fields and the queue position (a scan of the
// by_changed index).
func BenchmarkGetPending(b *testing.B) {
	st := benchStore(b, true)
	const n = 10000
	recs := make([]record, 0, n)
	for i := range n {
		recs = append(recs, benchRecord(b, "AK", i, []events.Name{events.EventEnqueued}))
	}
	if _, _, err := st.applyBatch(recs); err != nil {
		b.Fatal(err)
	}
	ref := fmt.Sprintf("s%08d", n-1)
	b.ResetTimer()
	for b.Loop() {
		info, ok, err := st.get("AK", ref)
		if err != nil || !ok || info.QueuePosition != n {
			b.Fatalf("%v %v %d", err, ok, info.QueuePosition)
		}
	}
}

// interleaved is the log of n sessions going through names in waves of
// window sessions, one event of each session of the wave in turn: a
// session's events land in different batches, as they do under load.
func interleaved(tb testing.TB, ak string, n, window int, names []events.Name) []record {
	recs := make([]record, 0, n*len(names))
	for w := 0; w < n; w += window {
		for step := range names {
			for s := w; s < min(w+window, n); s++ {
				r := benchRecord(tb, ak, s*len(names)+step, names)
				r.seq = uint64(len(recs) + 1)
				recs = append(recs, r)
			}
		}
	}
	return recs
}

// BenchmarkApplyInterleaved applies sessions' lifecycles interleaved, in
// batches of 64 events: each session is loaded again by several batches.
func BenchmarkApplyInterleaved(b *testing.B) {
	st := benchStore(b, false)
	recs := interleaved(b, "ak1", max(b.N/len(benchLifecycle), 1), 256, benchLifecycle)
	b.ReportAllocs()
	b.ResetTimer()
	for batch := range slices.Chunk(recs, 64) {
		if _, _, err := st.applyBatch(batch); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(len(recs))/b.Elapsed().Seconds(), "events/s")
}
