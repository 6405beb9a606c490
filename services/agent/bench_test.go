package agent_test

import (
	"context"
	"io"
	"os/exec"
	"testing"
	"time"

	"github.com/bai-sh/bai/pkg/events"
	"github.com/bai-sh/bai/services/agent"
)

// BenchmarkSandboxedExec is one execution of python -c 'print(1)' in a
// sandboxed kernel made once: start, output, exit, through either helper
// (the agent's binary re-executed: here the test binary; and the small
// bai-sandbox-init); "bare" is the interpreter alone. The difference is the
// sandbox's cost per execution. Where the host cannot sandbox, the first
// two measure a plain process.
func BenchmarkSandboxedExec(b *testing.B) {
	helper := buildHelper(b)
	b.Run("bare", func(b *testing.B) {
		for b.Loop() {
			out, err := exec.Command("/usr/bin/python3", "-c", "print(1)").Output()
			if err != nil || string(out) != "1\n" {
				b.Fatalf("%q, %v", out, err)
			}
		}
	})
	b.Run("self", func(b *testing.B) { benchExec(b, "") })
	b.Run("helper-binary", func(b *testing.B) { benchExec(b, helper) })
}

// BenchmarkSandboxedKernel is a whole kernel's life with one execution,
// as in bai run --rm: create (work dir tmpfs, cgroups), run python -c
// 'print(1)', destroy; with the small helper.
func BenchmarkSandboxedKernel(b *testing.B) {
	helper := buildHelper(b)
	ctx := context.Background()
	r := agent.NewProcessRuntime(b.TempDir(), map[string]string{"python:": "/usr/bin/python3"})
	if notes := r.Sandbox(agent.SandboxOptions{Helper: helper}); len(notes) > 0 {
		b.Logf("not sandboxed here: %v", notes)
	}
	b.Cleanup(func() {
		if err := r.Purge(ctx); err != nil {
			b.Errorf("purge: %v", err)
		}
	})
	k := &events.SessionSpec{ID: "bench", Image: testImage, MainKernelID: "k-bench",
		Slots: map[string]string{"cpu": "1", "mem": "1g"}}
	var create, destroy time.Duration
	for b.Loop() {
		t0 := time.Now()
		if err := r.Create(ctx, k); err != nil {
			b.Fatal(err)
		}
		create += time.Since(t0)
		p, err := r.Exec(ctx, k, events.RunSpec{ID: "r", Code: "print(1)"})
		if err != nil {
			b.Fatal(err)
		}
		out, _ := io.ReadAll(p.Stdout())
		io.Copy(io.Discard, p.Stderr())
		code, err := p.Wait()
		p.Close()
		if err != nil || code != 0 || string(out) != "1\n" {
			b.Fatalf("exit %d, %v, stdout %q", code, err, out)
		}
		t1 := time.Now()
		if err := r.Destroy(ctx, k); err != nil {
			b.Fatal(err)
		}
		destroy += time.Since(t1)
	}
	b.ReportMetric(float64(create.Microseconds())/float64(b.N), "create-µs/op")
	b.ReportMetric(float64(destroy.Microseconds())/float64(b.N), "destroy-µs/op")
}

// BenchmarkBatchKernel is a batch session's kernel on the agent's side:
// create (work dir tmpfs, cgroups), run /bin/true, destroy. Through the
// spawn server where the host has one. cpu-µs/op is this process's CPU
// alone (the agent's part; the spawn server, its inits and /bin/true are
// other processes): the figure the agent's system calls move.
func BenchmarkBatchKernel(b *testing.B) {
	helper := buildHelper(b)
	ctx := context.Background()
	r := agent.NewProcessRuntime(b.TempDir(), map[string]string{"python:": "/usr/bin/python3"})
	if notes := r.Sandbox(agent.SandboxOptions{Helper: helper}); len(notes) > 0 {
		b.Logf("not sandboxed here: %v", notes)
	}
	b.Cleanup(func() {
		if err := r.Purge(ctx); err != nil {
			b.Errorf("purge: %v", err)
		}
	})
	k := &events.SessionSpec{ID: "bench", Image: testImage, MainKernelID: "k-batch",
		Slots: map[string]string{"cpu": "1", "mem": "256m"}}
	cpu0 := agent.SelfCPU()
	for b.Loop() {
		if err := r.Create(ctx, k); err != nil {
			b.Fatal(err)
		}
		p, err := r.Exec(ctx, k, events.RunSpec{ID: "r", Exec: "/bin/true"})
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(io.Discard, p.Stdout())
		io.Copy(io.Discard, p.Stderr())
		code, err := p.Wait()
		if rp, ok := p.(interface{ Reason() string }); ok && code != 0 {
			b.Logf("reason: %s", rp.Reason())
		}
		p.Close()
		if err != nil || code != 0 {
			b.Fatalf("exit %d, %v", code, err)
		}
		if err := r.Destroy(ctx, k); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64((agent.SelfCPU()-cpu0).Microseconds())/float64(b.N), "cpu-µs/op")
}

func benchExec(b *testing.B, helper string) {
	ctx := context.Background()
	r := agent.NewProcessRuntime(b.TempDir(), map[string]string{"python:": "/usr/bin/python3"})
	notes := r.Sandbox(agent.SandboxOptions{Helper: helper})
	if !r.Sandboxed() || len(notes) > 0 {
		b.Logf("not sandboxed here: %v", notes)
	}
	b.Cleanup(func() {
		if err := r.Purge(ctx); err != nil {
			b.Errorf("purge: %v", err)
		}
	})
	k := &events.SessionSpec{ID: "bench", Image: testImage, MainKernelID: "k-bench",
		Slots: map[string]string{"cpu": "1", "mem": "1g"}}
	if err := r.Prepare(ctx, k); err != nil {
		b.Fatal(err)
	}
	if err := r.Create(ctx, k); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		p, err := r.Exec(ctx, k, events.RunSpec{ID: "r", Code: "print(1)"})
		if err != nil {
			b.Fatal(err)
		}
		out, _ := io.ReadAll(p.Stdout())
		errOut, _ := io.ReadAll(p.Stderr())
		code, err := p.Wait()
		p.Close()
		if err != nil || code != 0 || string(out) != "1\n" {
			b.Fatalf("exit %d, %v, stdout %q, stderr %q", code, err, out, errOut)
		}
	}
}
