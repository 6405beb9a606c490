package agent_test

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
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
	r := benchRuntime(b, helper)
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
	r := benchRuntime(b, helper)
	k := &events.SessionSpec{ID: "bench", Image: testImage, MainKernelID: "k-batch",
		Slots: map[string]string{"cpu": "1", "mem": "256m"}}
	cpu0 := agent.SelfCPU()
	for b.Loop() {
		if err := r.Create(ctx, k); err != nil {
			b.Fatal(err)
		}
		runTrue(b, r, k)
		if err := r.Destroy(ctx, k); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64((agent.SelfCPU()-cpu0).Microseconds())/float64(b.N), "cpu-µs/op")
}

// BenchmarkExecAmongKernels is an execution of /bin/true in a kernel of
// an agent with 0 or 1,000 other kernels (each with its work directory's
// mount and cgroups). machine-µs/op is the whole machine's CPU (/proc/stat:
// the spawn server and its inits are other processes), on a machine
// otherwise idle. The spawn server's namespace has none of the kernels'
// mounts: the two should cost the same (BENCHMARKS.md, "Twelfth round":
// 5.9 and 11.9 ms before, 5.0 and 5.0 after).
func BenchmarkExecAmongKernels(b *testing.B) {
	helper := buildHelper(b)
	for _, others := range []int{0, 1000} {
		b.Run(fmt.Sprint(others), func(b *testing.B) {
			ctx := context.Background()
			r := benchRuntime(b, helper)
			slots := map[string]string{"cpu": "1", "mem": "256m"}
			for i := range others {
				o := &events.SessionSpec{ID: "other", Image: testImage, MainKernelID: fmt.Sprint("k-other-", i), Slots: slots}
				if err := r.Create(ctx, o); err != nil {
					b.Fatal(err)
				}
			}
			k := &events.SessionSpec{ID: "bench", Image: testImage, MainKernelID: "k-bench", Slots: slots}
			if err := r.Create(ctx, k); err != nil {
				b.Fatal(err)
			}
			cpu0 := machineCPU(b)
			for b.Loop() {
				runTrue(b, r, k)
			}
			b.ReportMetric(float64((machineCPU(b)-cpu0).Microseconds())/float64(b.N), "machine-µs/op")
		})
	}
}

// machineCPU is the CPU every processor spent so far, but idle and
// waiting for I/O (/proc/stat's first line, in USER_HZ ticks of 10 ms).
func machineCPU(tb testing.TB) time.Duration {
	data, err := os.ReadFile("/proc/stat")
	if err != nil {
		tb.Fatal(err)
	}
	line, _, _ := strings.Cut(string(data), "\n")
	var ticks int64
	for i, f := range strings.Fields(line)[1:] {
		if i == 3 || i == 4 { // idle, iowait
			continue
		}
		n, _ := strconv.ParseInt(f, 10, 64)
		ticks += n
	}
	return time.Duration(ticks) * 10 * time.Millisecond
}

// runTrue runs /bin/true in kernel k, and fails b unless it exits 0.
func runTrue(b *testing.B, r *agent.ProcessRuntime, k *events.SessionSpec) {
	p, err := r.Exec(context.Background(), k, events.RunSpec{ID: "r", Exec: "/bin/true"})
	if err != nil {
		b.Fatal(err)
	}
	io.Copy(io.Discard, p.Stdout())
	io.Copy(io.Discard, p.Stderr())
	code, err := p.Wait()
	p.Close()
	if err != nil || code != 0 {
		b.Fatalf("exit %d, %v", code, err)
	}
}

// benchRuntime is a sandboxed process runtime with the python image and
// helper, purged at the end; where the host cannot sandbox, it says so.
func benchRuntime(b *testing.B, helper string) *agent.ProcessRuntime {
	r := agent.NewProcessRuntime(b.TempDir(), map[string]string{"python:": "/usr/bin/python3"})
	if notes := r.Sandbox(agent.SandboxOptions{Helper: helper}); !r.Sandboxed() || len(notes) > 0 {
		b.Logf("not sandboxed here: %v", notes)
	}
	b.Cleanup(func() {
		if err := r.Purge(context.Background()); err != nil {
			b.Errorf("purge: %v", err)
		}
	})
	return r
}

func benchExec(b *testing.B, helper string) {
	ctx := context.Background()
	r := benchRuntime(b, helper)
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
