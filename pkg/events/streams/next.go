package streams

import (
	"context"
	"errors"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Next is it.Next for a loop that reads a consumer for good, less a stall
// of nats.go's message iterator (v1.55.0). The iterator asks the server
// for more messages only when a message or an error reaches Next, and not
// while its last request is still being sent (another goroutine sends
// it). Where Next takes the last buffered messages in that moment, nothing
// asks again: the server has nothing left to deliver and no request, and
// the iterator waits until two heartbeats were missed (2 s with
// FollowHeartbeat, 10 s for an agent's work). It was seen in one
// bai-bench batch run in five: an agent's starts stopped for 10 s with 128
// placements waiting on its consumer, none pending acknowledgement and no
// pull request waiting (BENCHMARKS.md, eighth round).
//
// So Next waits a short while first, and where nothing came, calls
// it.Next again, which asks for more if it has to: after 50 ms, then
// twice as long each time (the request may still be on its way if the
// process is starved of CPU), about 3 s in all; then it waits for good,
// the heartbeat check on, until a message, ctx's end or the iterator's.
func Next(ctx context.Context, it jetstream.MessagesContext) (jetstream.Msg, error) {
	for wait := recheckAfter; wait <= recheckUntil; wait *= 2 {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		msg, err := it.Next(jetstream.NextMaxWait(wait))
		if !errors.Is(err, nats.ErrTimeout) {
			return msg, err
		}
	}
	return it.Next(jetstream.NextContext(ctx))
}

// The first and the last of Next's short waits.
const (
	recheckAfter = 50 * time.Millisecond
	recheckUntil = 1600 * time.Millisecond
)
