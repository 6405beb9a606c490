package agent

import (
	"fmt"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/bai-sh/bai/pkg/events"
)

// BenchmarkKernelStartWrites measures the state write of one kernel
// start (the record, RUNNING with its initial run), with fsync. Before
// the third round a start wrote an intent first: two commits.
func BenchmarkKernelStartWrites(b *testing.B) {
	st := benchState(b)
	for i := 0; b.Loop(); i++ {
		benchStart(b, st, i)
	}
}

// benchState is a state db of its own, with fsync, closed at the end.
func benchState(b *testing.B) *state {
	st, err := openState(filepath.Join(b.TempDir(), "agent.db"), false, zerolog.Nop())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { st.close() })
	return st
}

// benchStart writes kernel i's start (its record, RUNNING with its run)
// and says its id.
func benchStart(b *testing.B, st *state, i int) string {
	spec := events.SessionSpec{ID: fmt.Sprint("s", i), MainKernelID: fmt.Sprint("k", i), Slots: map[string]string{"cpu": "1"}}
	if _, err := st.putKernelRuns(kernelRecord{Spec: spec, Phase: phaseRunning, CreatedAt: time.Now()}, "r"); err != nil {
		b.Fatal(err)
	}
	return spec.MainKernelID
}

// BenchmarkKernelLifeWrites is the state writes of a batch kernel's life
// on the agent: its start (the record, RUNNING with its run) and its
// removal, each a commit with fsync, one kernel at a time (no group
// commit). cpu-µs/op is this process's CPU.
func BenchmarkKernelLifeWrites(b *testing.B) {
	st := benchState(b)
	cpu0 := SelfCPU()
	for i := 0; b.Loop(); i++ {
		if err := st.removeKernel(benchStart(b, st, i), time.Now()); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64((SelfCPU()-cpu0).Microseconds())/float64(b.N), "cpu-µs/op")
}

// SelfCPU is this process's user and system CPU so far (for the
// benchmarks of package agent_test too).
func SelfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
