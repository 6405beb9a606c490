package events

import (
	"slices"
	"strconv"
	"testing"
)

type testChunk struct {
	stream string
	n      uint64
}

func feed(o *ChunkOrder[string], run string, in []testChunk) []string {
	var out []string
	for _, c := range in {
		out = o.Add(out, run, c.stream, c.n, c.stream+strconv.FormatUint(c.n, 10))
	}
	return out
}

func TestChunkOrderPutsALateChunkBackInPlace(t *testing.T) {
	o := NewChunkOrder[string](true)
	// stdout 2 was sent again after 3 and 4 were stored; stderr is apart.
	got := feed(o, "r1", []testChunk{{"stdout", 1}, {"stdout", 3}, {"stderr", 1}, {"stdout", 4}, {"stdout", 2}, {"stdout", 5}})
	want := []string{"stdout1", "stderr1", "stdout2", "stdout3", "stdout4", "stdout5"}
	if !slices.Equal(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	if rest := o.Flush(nil, "r1"); len(rest) != 0 {
		t.Fatalf("held after every chunk came: %v", rest)
	}
}

func TestChunkOrderFromStartHoldsAFirstChunkThatComesLate(t *testing.T) {
	o := NewChunkOrder[string](true)
	got := feed(o, "r1", []testChunk{{"stdout", 2}, {"stdout", 3}})
	if len(got) != 0 {
		t.Fatalf("chunks 2 and 3 came out before chunk 1: %v", got)
	}
	got = feed(o, "r1", []testChunk{{"stdout", 1}})
	if want := []string{"stdout1", "stdout2", "stdout3"}; !slices.Equal(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
}

func TestChunkOrderMidRunReaderStartsAtItsFirstChunk(t *testing.T) {
	o := NewChunkOrder[string](false)
	o.FromStart("mine")
	got := feed(o, "r1", []testChunk{{"stdout", 7}, {"stdout", 8}, {"stdout", 6}})
	// 6 came after the reader started at 7: it is shown as it comes.
	if want := []string{"stdout7", "stdout8", "stdout6"}; !slices.Equal(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	// A run declared FromStart waits for its chunk 1.
	got = feed(o, "mine", []testChunk{{"stdout", 2}, {"stdout", 1}})
	if want := []string{"stdout1", "stdout2"}; !slices.Equal(got, want) {
		t.Fatalf("run read from its start: got %v, want %v", got, want)
	}
}

func TestChunkOrderFlushGivesTheGapsInOrder(t *testing.T) {
	o := NewChunkOrder[string](true)
	got := feed(o, "r1", []testChunk{{"stdout", 1}, {"stdout", 4}, {"stdout", 3}, {"stderr", 2}})
	got = append(got, feed(o, "r2", []testChunk{{"stdout", 2}})...) // another run: not flushed with r1
	if want := []string{"stdout1"}; !slices.Equal(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	rest := o.Flush(nil, "r1")
	if want := []string{"stderr2", "stdout3", "stdout4"}; !slices.Equal(rest, want) {
		t.Fatalf("flush of r1: got %v, want %v", rest, want)
	}
	if rest := o.Flush(nil, ""); !slices.Equal(rest, []string{"stdout2"}) {
		t.Fatalf("flush of everything: got %v", rest)
	}
	// A flushed run starts over: its next chunk is not held behind the gap.
	if got := feed(o, "r1", []testChunk{{"stdout", 1}}); !slices.Equal(got, []string{"stdout1"}) {
		t.Fatalf("after flush: got %v", got)
	}
}

func TestChunkOrderUnnumberedChunksPassAtOnce(t *testing.T) {
	o := NewChunkOrder[string](true)
	got := feed(o, "r1", []testChunk{{"stdout", 0}, {"stdout", 2}, {"stdout", 0}})
	if want := []string{"stdout0", "stdout0"}; !slices.Equal(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
}

func TestChunkOrderGivesUpOnALostChunk(t *testing.T) {
	o := NewChunkOrder[int](true)
	var out []int
	for n := uint64(2); n <= maxHeld+1; n++ {
		out = o.Add(out, "r", "stdout", n, int(n))
	}
	if len(out) != 0 {
		t.Fatalf("%d chunks came out while holding %d", len(out), maxHeld)
	}
	out = o.Add(out, "r", "stdout", maxHeld+2, maxHeld+2)
	if len(out) != maxHeld+1 || out[0] != 2 || out[len(out)-1] != maxHeld+2 {
		t.Fatalf("after the bound: %d chunks, first %v", len(out), out[:1])
	}
}

func TestChunkNumber(t *testing.T) {
	for v, want := range map[string]uint64{"": 0, "1": 1, "42": 42, "-1": 0, "x": 0, "18446744073709551616": 0} {
		if got := ChunkNumber(v); got != want {
			t.Errorf("ChunkNumber(%q) = %d, want %d", v, got, want)
		}
	}
}

// TestChunkOrderBoundsHeldBytes: with chunk 1 never coming, the bytes
// held never pass the bound; past it the order gives up the gap, says so
// (Gaps), and what it held comes out in order.
func TestChunkOrderBoundsHeldBytes(t *testing.T) {
	const chunk, limit = 1000, 10_000
	o := NewChunkOrder[[]byte](true).LimitBytes(limit, func(b []byte) int { return len(b) })
	var out [][]byte
	for n := uint64(2); n <= 200; n++ {
		out = o.Add(out, "r1", "stdout", n, make([]byte, chunk))
		if o.HeldBytes() > limit {
			t.Fatalf("after chunk %d: %d bytes held, bound %d", n, o.HeldBytes(), limit)
		}
	}
	if len(out) != 199 {
		t.Fatalf("%d chunks out of 199 after giving up the gap", len(out))
	}
	gaps := o.Gaps()
	if len(gaps) != 1 || gaps[0] != (Gap{Run: "r1", Stream: "stdout", From: 1, To: 1}) {
		t.Fatalf("gaps %v, want chunk 1 of r1's stdout", gaps)
	}
	if gaps[0].String() != "run r1: stdout chunk 1 never came" {
		t.Errorf("gap says %q", gaps[0])
	}
	if len(o.Gaps()) != 0 {
		t.Error("Gaps gave the same gap twice")
	}
	// Chunk 1 late: out as it comes, nothing held.
	if out = o.Add(out[:0], "r1", "stdout", 1, make([]byte, chunk)); len(out) != 1 || o.HeldBytes() != 0 {
		t.Errorf("late chunk: %d out, %d bytes held", len(out), o.HeldBytes())
	}
}

// TestChunkOrderFlushSaysWhatNeverCame: a run's exit flushes what is held
// and records the gaps in it.
func TestChunkOrderFlushSaysWhatNeverCame(t *testing.T) {
	o := NewChunkOrder[string](true).LimitBytes(1<<20, func(s string) int { return len(s) })
	if got := feed(o, "r1", []testChunk{{"stdout", 1}, {"stdout", 3}, {"stdout", 6}}); len(got) != 1 {
		t.Fatalf("out before the gaps: %v", got)
	}
	if got := o.Flush(nil, "r1"); !slices.Equal(got, []string{"stdout3", "stdout6"}) {
		t.Fatalf("flushed %v", got)
	}
	want := []Gap{{"r1", "stdout", 2, 2}, {"r1", "stdout", 4, 5}}
	if got := o.Gaps(); !slices.Equal(got, want) {
		t.Fatalf("gaps %v, want %v", got, want)
	}
	if o.HeldBytes() != 0 {
		t.Errorf("%d bytes held after the flush", o.HeldBytes())
	}
}
