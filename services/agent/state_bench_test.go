package agent

import (
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/bai-sh/bai/pkg/events"
)

// BenchmarkKernelStartWrites measures the state write of one kernel
// start (the record, RUNNING with its initial run), with fsync. Before
// the third round a start wrote an intent first: two commits.
func BenchmarkKernelStartWrites(b *testing.B) {
	st, err := openState(filepath.Join(b.TempDir(), "agent.db"), false, zerolog.Nop())
	if err != nil {
		b.Fatal(err)
	}
	defer st.close()
	i := 0
	for b.Loop() {
		spec := events.SessionSpec{ID: fmt.Sprint("s", i), MainKernelID: fmt.Sprint("k", i), Slots: map[string]string{"cpu": "1"}}
		if _, err := st.putKernelRuns(kernelRecord{Spec: spec, Phase: phaseRunning, CreatedAt: time.Now()}, "r"); err != nil {
			b.Fatal(err)
		}
		i++
	}
}
