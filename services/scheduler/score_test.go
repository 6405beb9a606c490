package scheduler

import (
	"testing"

	"github.com/bai-sh/bai/pkg/slots"
)

// TestFreeScoreWith: it ranks as freeScore of the sum does.
func TestFreeScoreWith(t *testing.T) {
	capacity := slots.Set{"cpu": 8 * slots.Scale, "mem": 16 << 30, "cuda.shares": 0}
	for _, tc := range []struct{ used, add slots.Set }{
		{slots.Set{}, slots.Set{}},
		{slots.Set{"cpu": slots.Scale}, slots.Set{"cpu": slots.Scale, "mem": 1 << 30}},
		{slots.Set{"mem": 3 << 30}, slots.Set{"cuda.shares": 5}},
		{slots.Set{"cpu": 8 * slots.Scale, "mem": 16 << 30}, slots.Set{}},
	} {
		sum, err := tc.used.Add(tc.add)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := freeScoreWith(capacity, tc.used, tc.add), freeScore(capacity, sum); got != want {
			t.Errorf("used %v add %v: %d, want %d", tc.used, tc.add, got, want)
		}
	}
}
