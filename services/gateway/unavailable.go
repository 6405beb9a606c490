package gateway

import (
	"context"
	"errors"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/bai-sh/bai/pkg/events"
)

// unavailable reports whether err says a JetStream stream or bucket did
// not answer (no responders, no answer in time, no leader): a NATS node
// down or a cluster electing, not a fault of the request.
func unavailable(err error) bool {
	var ae *jetstream.APIError
	if errors.As(err, &ae) && (ae.Code == 503 || ae.ErrorCode == 10008) {
		return true
	}
	return errors.Is(err, nats.ErrNoResponders) || errors.Is(err, jetstream.ErrNoStreamResponse) ||
		errors.Is(err, nats.ErrTimeout) || errors.Is(err, context.DeadlineExceeded) ||
		errors.Is(err, nats.ErrConnectionReconnecting) || errors.Is(err, nats.ErrDisconnected)
}

// storeError is the API error of a failed read of what: busy, retry, when
// the store did not answer; internal otherwise.
func storeError(what string, err error) error {
	if unavailable(err) {
		return events.Errorf(events.ErrBusy, "could not read %s: the store does not answer now (%v): a NATS node may be down or the cluster electing; retry in a moment", what, err)
	}
	return events.Errorf(events.ErrInternal, "could not read %s: %v", what, err)
}
