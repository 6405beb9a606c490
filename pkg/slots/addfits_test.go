package slots

import (
	"math"
	"math/rand/v2"
	"testing"
)

// TestAddFits: AddFits agrees with Add then Fits, overflow included.
func TestAddFits(t *testing.T) {
	keys := []string{"cpu", "mem", "cuda.shares"}
	vals := []Quantity{0, 1, 2, Scale, 4 * Scale, -1, math.MaxInt64, math.MaxInt64 - 1, math.MinInt64}
	r := rand.New(rand.NewPCG(1, 2))
	set := func() Set {
		s := Set{}
		for _, k := range keys {
			if r.IntN(3) > 0 {
				s[k] = vals[r.IntN(len(vals))]
			}
		}
		return s
	}
	for range 20000 {
		s, o, c := set(), set(), set()
		sum, err := s.Add(o)
		want := err == nil && sum.Fits(c)
		if got := s.AddFits(o, c); got != want {
			t.Fatalf("%v.AddFits(%v, %v) = %v, want %v (sum %v, err %v)", s, o, c, got, want, sum, err)
		}
	}
	if (Set{}).AddFits(Set{"cpu": Scale}, Set{}) {
		t.Error("1 cpu fits no capacity")
	}
	if !(Set{"cpu": Scale}).AddFits(Set{"cpu": Scale}, Set{"cpu": 2 * Scale}) {
		t.Error("1+1 cpu does not fit 2")
	}
}

func BenchmarkAddFits(b *testing.B) {
	s := Set{"cpu": 4 * Scale, "mem": 8 << 30, "cuda.shares": 500_000}
	o := Set{"cpu": 2 * Scale, "mem": 1 << 30, "cuda.device": Scale}
	capacity := Set{"cpu": 64 * Scale, "mem": 512 << 30, "cuda.shares": 8 * Scale, "cuda.device": 8 * Scale}
	b.ReportAllocs()
	for b.Loop() {
		if !s.AddFits(o, capacity) {
			b.Fatal("does not fit")
		}
	}
}
