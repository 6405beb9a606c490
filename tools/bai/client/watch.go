package client

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"

	"github.com/nats-io/nats.go"

	"github.com/bai-sh/bai/pkg/events"
)

// Chunk is one output message of a run.
type Chunk struct {
	RunID  string
	Stream string // events.StreamStdout, events.StreamStderr or events.StreamExit
	Data   []byte // the output; empty on events.StreamExit
	// ExitCode is the run's exit code, on events.StreamExit.
	ExitCode int
	// Number is the chunk's number in its run and stream
	// (events.HeaderChunk); 0 when unknown.
	Number uint64
}

// Item is one thing a Watcher delivers: exactly one of its fields is set.
type Item struct {
	Event  *events.Event
	Output *Chunk
	// Err is a message that could not be decoded, or output that never
	// came (wrapping ErrOutputGap); the watch goes on.
	Err error

	spilled int // Output.Data's length, kept in the watcher's spill file
}

// ErrOutputGap: chunks of a run's output never came (lost, or stored
// too long after later ones); the output goes on without them.
var ErrOutputGap = errors.New("output missing")

// MaxQueuedBytes bounds the output a Watcher keeps in memory for its
// caller: output arriving while that much waits is written to a temporary
// file (removed at once; it lives until Close) and read back in turn.
// The NATS subscription cannot be slowed down, so a caller slower than
// the run (a terminal, a pipe) costs disk, not memory.
const MaxQueuedBytes = 8 << 20

// Watcher follows one session's events and output live, with core NATS
// subscriptions whose pending limits are unlimited: nothing is dropped
// while the caller is slow. It delivers messages in the order each
// subscription received them; Sync restores the order between the two.
type Watcher struct {
	c    *Client
	subs []*nats.Subscription
	wake chan struct{}

	mu    sync.Mutex
	queue []Item
	err   error                      // a subscription failed (permissions)
	order *events.ChunkOrder[*Chunk] // output chunks stored out of order
	// mem is the bytes of output data queued in memory; past
	// MaxQueuedBytes data goes to spill, written at spillW and read
	// back, in queue order, at spillR.
	mem            int
	spill          *os.File
	spillW, spillR int64
	spillErr       error // the spill file failed: output stays in memory
}

// Watch subscribes to the events (their live copy: events.LiveSessionFilter,
// what the log stored and nothing it refused) and output
// (events.OutputFilter) of session sid owned by access key ak (empty: the
// client's own). The subscriptions are in place on the server when Watch
// returns, so a create sent afterwards misses nothing. Close it when done.
func (c *Client) Watch(ctx context.Context, ak, sid string) (*Watcher, error) {
	return c.watch(ctx, ak, sid, true)
}

// WatchOwn is Watch of the client's own session sid without waiting for
// the server's answer (a round trip), for a session this client acts on
// next (create, execute): the server handles one connection's messages in
// order, so the subscriptions are in place before any request the client
// sends afterwards. A refused subscription fails Next, as with Watch.
func (c *Client) WatchOwn(sid string) (*Watcher, error) {
	return c.watch(context.Background(), "", sid, false)
}

func (c *Client) watch(ctx context.Context, ak, sid string, flush bool) (*Watcher, error) {
	if ak == "" {
		ak = c.ak
	}
	evSubj, err := events.LiveSessionFilter(ak, sid)
	if err != nil {
		return nil, err
	}
	outSubj, err := events.LiveOutputFilter(ak, sid)
	if err != nil {
		return nil, err
	}
	w := &Watcher{c: c, wake: make(chan struct{}, 1), order: events.NewChunkOrder[*Chunk](false).
		LimitBytes(events.MaxHeldBytes, func(ch *Chunk) int { return len(ch.Data) })}
	for _, s := range []struct {
		subj string
		cb   nats.MsgHandler
	}{{evSubj, w.onEvent}, {outSubj, w.onOutput}} {
		sub, err := c.nc.Subscribe(s.subj, s.cb)
		if err != nil {
			w.Close()
			return nil, fmt.Errorf("subscribe to %s: %w", s.subj, err)
		}
		w.subs = append(w.subs, sub)
		c.watchers.Store(sub, w)
		if err := sub.SetPendingLimits(-1, -1); err != nil {
			w.Close()
			return nil, fmt.Errorf("subscribe to %s: %w", s.subj, err)
		}
	}
	if !flush {
		return w, nil
	}
	fctx, cancel := c.bounded(ctx)
	defer cancel()
	if err := c.nc.FlushWithContext(fctx); err != nil {
		w.Close()
		return nil, fmt.Errorf("subscribe to session %s: %w", sid, err)
	}
	return w, nil
}

func (w *Watcher) push(it Item) {
	w.mu.Lock()
	w.queue = append(w.queue, it)
	w.mu.Unlock()
	w.notify()
}

func (w *Watcher) notify() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// FromStart says that run started after the watcher subscribed (the
// caller is about to ask for it): its output is delivered in the order it
// was written from its first chunk, even when the log stored a chunk
// after later ones. Output of other runs is put in order from the first
// chunk the watcher saw.
func (w *Watcher) FromStart(run string) {
	w.mu.Lock()
	w.order.FromStart(run)
	w.mu.Unlock()
}

func (w *Watcher) onEvent(m *nats.Msg) {
	subj, err := events.FromLive(m.Subject)
	if err != nil {
		w.push(Item{Err: err})
		return
	}
	ev, err := events.Decode(subj, m.Data)
	if err != nil {
		w.push(Item{Err: fmt.Errorf("event on %s: %w", m.Subject, err)})
		return
	}
	// A folded event comes as the events it stands for (Event.Steps).
	for _, e := range ev.Expand() {
		w.push(Item{Event: e})
	}
}

func (w *Watcher) onOutput(m *nats.Msg) {
	subj, err := events.FromLive(m.Subject)
	if err != nil {
		w.push(Item{Err: err})
		return
	}
	ch, err := decodeChunk(subj, m)
	if err != nil {
		w.push(Item{Err: err})
		return
	}
	w.mu.Lock()
	var ready []*Chunk
	if ch.Stream == events.StreamExit {
		// Published after every chunk of the run was stored.
		ready = append(w.order.Flush(ready, ch.RunID), ch)
	} else {
		ch.Number = events.ChunkNumber(m.Header.Get(events.HeaderChunk))
		ready = w.order.Add(ready, ch.RunID, ch.Stream, ch.Number, ch)
	}
	w.enqueue(ready)
	w.mu.Unlock()
	w.notify()
}

// enqueue queues output chunks, then the gaps the order gave up on; the
// caller holds mu.
func (w *Watcher) enqueue(chunks []*Chunk) {
	for _, c := range chunks {
		it := Item{Output: c}
		if n := len(c.Data); n > 0 && w.mem+n > MaxQueuedBytes && w.spillErr == nil {
			if err := w.spillData(c.Data); err != nil {
				w.spillErr = err
				w.queue = append(w.queue, Item{Err: fmt.Errorf("output beyond %d bytes kept in memory: %w", MaxQueuedBytes, err)})
			} else {
				it.spilled, c.Data = n, nil
			}
		}
		if it.spilled == 0 {
			w.mem += len(c.Data)
		}
		w.queue = append(w.queue, it)
	}
	for _, g := range w.order.Gaps() {
		w.queue = append(w.queue, Item{Err: fmt.Errorf("%w: %s", ErrOutputGap, g)})
	}
}

// spillData appends data to the spill file, made on first use.
func (w *Watcher) spillData(data []byte) error {
	if w.spill == nil {
		f, err := os.CreateTemp("", "bai-output-*")
		if err != nil {
			return err
		}
		_ = os.Remove(f.Name()) // it lives while open
		w.spill = f
	}
	if _, err := w.spill.WriteAt(data, w.spillW); err != nil {
		return err
	}
	w.spillW += int64(len(data))
	return nil
}

// unspill reads the data of a spilled item back; the caller holds mu.
func (w *Watcher) unspill(it *Item) {
	if w.spill == nil {
		it.Output, it.Err, it.spilled = nil, fmt.Errorf("%w (%s)", ErrClosed, w.c.url), 0
		return
	}
	data := make([]byte, it.spilled)
	if _, err := w.spill.ReadAt(data, w.spillR); err != nil {
		it.Output, it.Err = nil, fmt.Errorf("read back output kept on disk: %w", err)
	} else {
		it.Output.Data = data
	}
	w.spillR += int64(it.spilled)
	it.spilled = 0
	if w.spillR == w.spillW {
		// Everything read back: the file starts over.
		w.spillR, w.spillW = 0, 0
		_ = w.spill.Truncate(0)
	}
}

// decodeChunk reads output message m, stored on subj.
func decodeChunk(subj string, m *nats.Msg) (*Chunk, error) {
	toks := strings.Split(subj, ".")
	if len(toks) != 5 || toks[0] != "bai" || toks[1] != "out" {
		return nil, fmt.Errorf("%w: output on %q", ErrBadReply, subj)
	}
	ch := &Chunk{RunID: toks[4], Stream: m.Header.Get(events.HeaderStream)}
	switch ch.Stream {
	case events.StreamStdout, events.StreamStderr:
		ch.Data = m.Data
	case events.StreamExit:
		code, err := strconv.Atoi(strings.TrimSpace(string(m.Data)))
		if err != nil {
			return nil, fmt.Errorf("%w: exit code %q on %s", ErrBadReply, m.Data, m.Subject)
		}
		ch.ExitCode = code
	default:
		return nil, fmt.Errorf("%w: output on %s with %s %q", ErrBadReply, m.Subject, events.HeaderStream, ch.Stream)
	}
	return ch, nil
}

// subErr records an asynchronous error of one of the watcher's
// subscriptions (a permissions violation).
func (w *Watcher) subErr(err error) {
	w.mu.Lock()
	if w.err == nil {
		w.err = err
	}
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// TryNext returns the next queued item without waiting.
func (w *Watcher) TryNext() (Item, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.queue) == 0 {
		return Item{}, false
	}
	it := w.queue[0]
	w.queue[0] = Item{}
	w.queue = w.queue[1:]
	if len(w.queue) == 0 {
		w.queue = nil // let a grown backing array go
	}
	switch {
	case it.spilled > 0:
		w.unspill(&it)
	case it.Output != nil:
		w.mem -= len(it.Output.Data)
	}
	return it, true
}

// Next waits for the next item. It fails when ctx ends, when the
// connection is closed (ErrClosed) or when the server refused a
// subscription, once the items received before are delivered.
func (w *Watcher) Next(ctx context.Context) (Item, error) {
	for {
		if it, ok := w.TryNext(); ok {
			return it, nil
		}
		w.mu.Lock()
		err := w.err
		w.mu.Unlock()
		if err != nil {
			return Item{}, err
		}
		select {
		case <-w.wake:
		case <-ctx.Done():
			return Item{}, ctx.Err()
		case <-w.c.closed:
			if it, ok := w.TryNext(); ok {
				return it, nil
			}
			return Item{}, fmt.Errorf("%w (%s)", ErrClosed, w.c.url)
		}
	}
}

// Sync waits until every message the server sent before the call is in
// the watcher's queue. Events and output arrive on two subscriptions and
// may be queued out of their arrival order; after a final event, Sync
// followed by TryNext until empty yields any output that arrived before it,
// including chunks held back waiting for an earlier one (FromStart) that
// never came.
func (w *Watcher) Sync(ctx context.Context) error {
	fctx, cancel := w.c.bounded(ctx)
	defer cancel()
	if err := w.c.nc.FlushWithContext(fctx); err != nil {
		return fmt.Errorf("sync with the bai server: %w", err)
	}
	done := make(chan struct{})
	if err := w.c.nc.Barrier(func() { close(done) }); err != nil {
		return fmt.Errorf("sync with the bai server: %w", err)
	}
	select {
	case <-done:
	case <-ctx.Done():
		return ctx.Err()
	}
	w.mu.Lock()
	w.enqueue(w.order.Flush(nil, ""))
	w.mu.Unlock()
	return nil
}

// Queued reports the output data queued for the caller: in memory (at
// most MaxQueuedBytes, give or take a chunk) and on disk.
func (w *Watcher) Queued() (inMemory, onDisk int64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return int64(w.mem), w.spillW - w.spillR
}

// Close ends the subscriptions and drops what is still queued.
func (w *Watcher) Close() {
	for _, s := range w.subs {
		_ = s.Unsubscribe()
		w.c.watchers.Delete(s)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.spill != nil {
		_ = w.spill.Close()
		w.spill, w.spillErr = nil, errors.New("watcher closed")
	}
}
