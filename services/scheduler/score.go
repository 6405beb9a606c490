package scheduler

import "github.com/bai-sh/bai/pkg/slots"

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
