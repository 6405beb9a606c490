package agent

import (
	"context"
	"fmt"
	"os"
	"testing"

	"github.com/bai-sh/bai/pkg/events"
)

// BenchmarkPrestartedExec is one sandboxed execution, start to exit, with
// a helper started ahead (waited for between executions, as an
// interactive session's next execution finds it) and with a helper of its
// own: /bin/echo 1 (no shell: plainCommand) and python -c 'print(1)';
// and with 100 kernels on the agent, whose mounts each execution's
// namespace sheds. BAI_BENCH_HELPER names the helper binary (default:
// this test binary).
func BenchmarkPrestartedExec(b *testing.B) {
	for _, c := range []struct {
		name     string
		prestart int
		run      events.RunSpec
		kernels  int // more kernels on the agent
	}{
		{"echo/ahead", 1, events.RunSpec{ID: "r", Exec: "/bin/echo 1"}, 0},
		{"echo/own", -1, events.RunSpec{ID: "r", Exec: "/bin/echo 1"}, 0},
		{"python/ahead", 1, events.RunSpec{ID: "r", Code: "print(1)"}, 0},
		{"python/own", -1, events.RunSpec{ID: "r", Code: "print(1)"}, 0},
		{"echo/ahead/100-kernels", 1, events.RunSpec{ID: "r", Exec: "/bin/echo 1"}, 99},
		{"echo/own/100-kernels", -1, events.RunSpec{ID: "r", Exec: "/bin/echo 1"}, 99},
		{"echo/ahead/1000-kernels", 1, events.RunSpec{ID: "r", Exec: "/bin/echo 1"}, 999},
		{"echo/own/1000-kernels", -1, events.RunSpec{ID: "r", Exec: "/bin/echo 1"}, 999},
	} {
		b.Run(c.name, func(b *testing.B) {
			ctx := context.Background()
			r := NewProcessRuntime(b.TempDir(), map[string]string{"python:": "/usr/bin/python3"})
			if notes := r.Sandbox(SandboxOptions{Prestart: c.prestart, Helper: os.Getenv("BAI_BENCH_HELPER")}); !r.Sandboxed() || len(notes) > 0 {
				b.Skipf("not sandboxed here: %v", notes)
			}
			b.Cleanup(func() {
				if err := r.Purge(ctx); err != nil {
					b.Errorf("purge: %v", err)
				}
			})
			k := kernelSpec("bench")
			if err := r.Create(ctx, k); err != nil {
				b.Fatal(err)
			}
			for i := range c.kernels {
				if err := r.Create(ctx, kernelSpec(fmt.Sprint("other-", i))); err != nil {
					b.Fatal(err)
				}
			}
			for b.Loop() {
				if r.sb.pool != nil {
					b.StopTimer()
					r.sb.pool.mu.Lock()
					r.sb.pool.fillLocked()
					r.sb.pool.mu.Unlock()
					r.sb.pool.fillers.Wait()
					b.StartTimer()
				}
				if code, out, errs, _ := execOut(b, r, k, c.run); code != 0 || out != "1\n" {
					b.Fatalf("exit %d, stdout %q, stderr %q", code, out, errs)
				}
			}
		})
	}
}
