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

// The scan-based scores scoreVec and the agents' cached free scores must
// agree with: the reference definitions.

// freeScore ranks how much room is left: the sum over slot kinds of the
// free fraction, in parts per million. It only ranks agents; whether a
// session fits is decided by exact slot arithmetic.
func freeScore(capacity, used slots.Set) int64 {
	var score int64
	for k, c := range capacity {
		if c <= 0 {
			continue
		}
		free := c - used[k]
		score += int64(float64(free) / float64(c) * 1e6)
	}
	return score
}

// freeScoreWith is freeScore(capacity, used+add) without building the sum,
// so that pick allocates nothing per agent. The sum must not overflow
// (AddFits checked it).
func freeScoreWith(capacity, used, add slots.Set) int64 {
	var score int64
	for k, c := range capacity {
		if c <= 0 {
			continue
		}
		free := c - (used[k] + add[k])
		score += int64(float64(free) / float64(c) * 1e6)
	}
	return score
}
