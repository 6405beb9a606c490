package gateway

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/bai-sh/bai/pkg/events"
)

func TestStoreErrorSaysTheStoreDoesNotAnswer(t *testing.T) {
	for _, err := range []error{nats.ErrNoResponders, fmt.Errorf("get: %w", jetstream.ErrNoStreamResponse), nats.ErrTimeout,
		&jetstream.APIError{Code: 503, ErrorCode: 10008, Description: "JetStream system temporarily unavailable"}} {
		got := storeError("the resource policy of AK", err)
		if !errors.Is(got, events.ErrBusy) || !strings.Contains(got.Error(), "a NATS node may be down") {
			t.Errorf("%v: %v", err, got)
		}
	}
	if got := storeError("x", errors.New("disk on fire")); !errors.Is(got, events.ErrInternal) {
		t.Errorf("other error: %v", got)
	}
}
