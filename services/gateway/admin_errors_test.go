package gateway

import (
	"errors"
	"fmt"
	"testing"

	"github.com/bai-sh/bai/pkg/events"
)

// The admin API gives a store error its code by its kind, never by its
// words: a message that happens to say "invalid" or "already exists" is
// an internal error unless the store made it one of those kinds.
func TestAPIErrorByKind(t *testing.T) {
	bad := validatePolicy(&Policy{Name: "p", MaxPendingSessions: -1})
	for _, tc := range []struct {
		name string
		err  error
		want error
	}{
		{"bad field", bad, events.ErrInvalid},
		{"bad name", validatePolicy(&Policy{Name: "a b"}), events.ErrInvalid},
		{"bad slots", validatePolicy(&Policy{Name: "p", TotalSlots: map[string]string{"cpu": "x"}}), events.ErrInvalid},
		{"exists", exists("policy %q already exists", "p"), events.ErrConflict},
		{"exists wrapped", fmt.Errorf("create: %w", exists("access key %s already exists", "AK")), events.ErrConflict},
		{"no keypair", fmt.Errorf("%w %q", ErrNoKeypair, "AK"), events.ErrNotFound},
		{"words only", errors.New("invalid disk state: already exists"), events.ErrInternal},
		{"api error kept", events.Errorf(events.ErrForbidden, "no"), events.ErrForbidden},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.err == nil {
				t.Fatal("no error to classify")
			}
			got := apiError(tc.err)
			if !errors.Is(got, tc.want) {
				t.Fatalf("apiError(%v) = %v, want %v", tc.err, got, tc.want)
			}
			if got.Error() == "" {
				t.Fatal("no words")
			}
		})
	}
	if !errors.Is(bad, ErrBadField) || errors.Is(bad, ErrExists) {
		t.Fatalf("kinds of %v", bad)
	}
}
