package events

import (
	"cmp"
	"fmt"
	"maps"
	"slices"
	"strconv"
)

// ChunkOrder puts the output chunks of runs back in the order they were
// written (HeaderChunk), for a reader of the output stream or of its live
// copy. The agent publishes chunks without waiting for each
// acknowledgement; one whose acknowledgement is lost is sent again after
// at most a window of later ones, so the log may hold it after them.
//
// A chunk comes out once every chunk before it of its run and stream did:
// the others are held until then. Flush gives back what is held of a run
// (at its exit, which the agent publishes after every chunk was stored; or
// when the reader stops), each stream in order, gaps and all. A stream
// starts at chunk 1 for a run read from its start (FromStart, or every run
// with NewChunkOrder(true)); otherwise the first chunk the reader sees of
// it sets where it starts, and an earlier one seen later comes out at
// once. A chunk without a number (an older agent) comes out at once. At
// most maxHeld chunks are held per stream, and with LimitBytes at most so
// many bytes in all: past that the oldest come out as if the gap before
// them were lost. Every gap given up on (there, or by Flush) is recorded
// for Gaps. Not safe for concurrent use.
type ChunkOrder[T any] struct {
	allFromStart bool
	fromStart    map[string]bool
	streams      map[chunkStream]*heldChunks[T]

	maxBytes  int         // 0: no bound but maxHeld
	size      func(T) int // a chunk's bytes, with maxBytes
	heldBytes int         // the bytes of every chunk held
	gaps      []Gap       // given up on, not yet taken by Gaps
}

// maxHeld bounds the chunks held per run and stream: well past the
// agent's window of chunks in flight.
const maxHeld = 1024

// MaxHeldBytes is the bound readers give LimitBytes: twice the agent's
// window of chunks in flight (64 chunks of 32 KiB), past which a missing
// chunk is not coming.
const MaxHeldBytes = 4 << 20

// Gap is a run of chunks of one stream that a ChunkOrder gave up waiting
// for: From to To, inclusive.
type Gap struct {
	Run, Stream string
	From, To    uint64
}

func (g Gap) String() string {
	if g.From == g.To {
		return fmt.Sprintf("run %s: %s chunk %d never came", g.Run, g.Stream, g.From)
	}
	return fmt.Sprintf("run %s: %s chunks %d to %d never came", g.Run, g.Stream, g.From, g.To)
}

// LimitBytes bounds the bytes held, as size counts them, to max (> 0):
// past it the stream that added the last chunk gives up its oldest gaps
// until the bound holds again. It returns o.
func (o *ChunkOrder[T]) LimitBytes(max int, size func(T) int) *ChunkOrder[T] {
	o.maxBytes, o.size = max, size
	return o
}

// HeldBytes is the bytes held now (0 without LimitBytes).
func (o *ChunkOrder[T]) HeldBytes() int { return o.heldBytes }

// Gaps returns the gaps given up on since the last call, oldest first.
func (o *ChunkOrder[T]) Gaps() []Gap {
	g := o.gaps
	o.gaps = nil
	return g
}

func (o *ChunkOrder[T]) bytes(c T) int {
	if o.size == nil {
		return 0
	}
	return o.size(c)
}

// giveUp skips the gap before the oldest chunk held of stream k.
func (o *ChunkOrder[T]) giveUp(k chunkStream, h *heldChunks[T]) {
	first := slices.Min(slices.Collect(maps.Keys(h.held)))
	o.gaps = append(o.gaps, Gap{Run: k.run, Stream: k.stream, From: h.next, To: first - 1})
	h.next = first
}

type chunkStream struct{ run, stream string }

type heldChunks[T any] struct {
	next uint64 // the number expected next; 0 before the first chunk
	held map[uint64]T
}

// NewChunkOrder returns an empty ChunkOrder; with allFromStart every run is
// read from its start (a reader of the whole stored output).
func NewChunkOrder[T any](allFromStart bool) *ChunkOrder[T] {
	return &ChunkOrder[T]{allFromStart: allFromStart, fromStart: map[string]bool{}, streams: map[chunkStream]*heldChunks[T]{}}
}

// FromStart says that run is read from its first chunk (it started after
// the reader subscribed): a first chunk that comes after later ones is
// waited for.
func (o *ChunkOrder[T]) FromStart(run string) { o.fromStart[run] = true }

// ChunkNumber parses a HeaderChunk value; 0 when absent or malformed.
func ChunkNumber(v string) uint64 {
	n, err := strconv.ParseUint(v, 10, 64)
	if err != nil {
		return 0
	}
	return n
}

// Add takes chunk c, number n (0: none) of run's stream, and returns the
// chunks now ready, in order (out is reused when it has room).
func (o *ChunkOrder[T]) Add(out []T, run, stream string, n uint64, c T) []T {
	if n == 0 {
		return append(out, c)
	}
	k := chunkStream{run, stream}
	h := o.streams[k]
	if h == nil {
		h = &heldChunks[T]{}
		if o.allFromStart || o.fromStart[run] {
			h.next = 1
		}
		o.streams[k] = h
	}
	if h.next == 0 {
		h.next = n
	}
	switch {
	case n < h.next:
		return append(out, c) // late, or a duplicate: as it comes
	case n > h.next:
		if h.held == nil {
			h.held = map[uint64]T{}
		}
		if _, dup := h.held[n]; dup {
			return out
		}
		h.held[n] = c
		o.heldBytes += o.bytes(c)
		if len(h.held) > maxHeld {
			// The missing one is lost: go on from the oldest held.
			o.giveUp(k, h)
		}
	default:
		out = append(out, c)
		h.next++
	}
	for {
		out = o.drain(out, h)
		if o.maxBytes == 0 || o.heldBytes <= o.maxBytes || len(h.held) == 0 {
			return out
		}
		o.giveUp(k, h)
	}
}

// drain moves the chunks of h that are next in order to out.
func (o *ChunkOrder[T]) drain(out []T, h *heldChunks[T]) []T {
	for {
		c, ok := h.held[h.next]
		if !ok {
			return out
		}
		delete(h.held, h.next)
		o.heldBytes -= o.bytes(c)
		out = append(out, c)
		h.next++
	}
}

// Flush returns every chunk held of run (any run when run is ""), stream
// by stream, each in order, and forgets the run.
func (o *ChunkOrder[T]) Flush(out []T, run string) []T {
	keys := make([]chunkStream, 0, len(o.streams))
	for k := range o.streams {
		if run == "" || k.run == run {
			keys = append(keys, k)
		}
	}
	slices.SortFunc(keys, func(a, b chunkStream) int {
		return cmp.Or(cmp.Compare(a.run, b.run), cmp.Compare(a.stream, b.stream))
	})
	for _, k := range keys {
		h := o.streams[k]
		ns := slices.Sorted(maps.Keys(h.held))
		for _, n := range ns {
			if n > h.next && h.next > 0 {
				o.gaps = append(o.gaps, Gap{Run: k.run, Stream: k.stream, From: h.next, To: n - 1})
			}
			h.next = n + 1
			o.heldBytes -= o.bytes(h.held[n])
			out = append(out, h.held[n])
		}
		delete(o.streams, k)
	}
	if run == "" {
		clear(o.fromStart)
	} else {
		delete(o.fromStart, run)
	}
	return out
}
