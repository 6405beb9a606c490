package slots

import "testing"

func BenchmarkParseList(b *testing.B) {
	kvs := []string{"cpu=4", "mem=8g", "cuda.shares=0.5", "cuda.device=1,cuda.mem=1.5g"}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseList(kvs); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkFits(b *testing.B) {
	s := Set{"cpu": 4 * Scale, "mem": 8 << 30, "cuda.shares": 500_000}
	capacity := Set{"cpu": 64 * Scale, "mem": 512 << 30, "cuda.shares": 8 * Scale, "cuda.device": 8 * Scale}
	b.ReportAllocs()
	for b.Loop() {
		if !s.Fits(capacity) {
			b.Fatal("does not fit")
		}
	}
}

func BenchmarkAdd(b *testing.B) {
	s := Set{"cpu": 4 * Scale, "mem": 8 << 30, "cuda.shares": 500_000}
	o := Set{"cpu": 2 * Scale, "mem": 1 << 30, "cuda.device": Scale}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.Add(o); err != nil {
			b.Fatal(err)
		}
	}
}
