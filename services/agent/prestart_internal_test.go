package agent

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/bai-sh/bai/pkg/events"
	"github.com/bai-sh/bai/services/agent/internal/sandboxinit"
)

// sandboxRuntime is a sandboxed runtime, purged at the end (its kernels'
// root then no mount); it skips where there is no sandbox.
func sandboxRuntime(t *testing.T, opts SandboxOptions) *ProcessRuntime {
	t.Helper()
	return sandboxRuntimeAt(t, t.TempDir(), opts)
}

// sandboxRuntimeAt is sandboxRuntime with its kernels' root at root.
func sandboxRuntimeAt(t *testing.T, root string, opts SandboxOptions) *ProcessRuntime {
	t.Helper()
	r := NewProcessRuntime(root, nil)
	notes := r.Sandbox(opts)
	t.Cleanup(func() {
		if err := r.Purge(t.Context()); err != nil {
			t.Errorf("purge: %v", err)
		}
		if mounted, _, _, err := rootMounts(r.root); err != nil || mounted {
			t.Errorf("after purge the kernels' root is still a mount (%v)", err)
		}
	})
	if !r.Sandboxed() || len(notes) > 0 {
		t.Skipf("SKIP: no sandbox on this host (run as root with namespaces and cgroups): %v", notes)
	}
	return r
}

// prestartRuntime is a sandboxed runtime with one helper started ahead.
func prestartRuntime(t *testing.T) *ProcessRuntime {
	t.Helper()
	return sandboxRuntime(t, SandboxOptions{Prestart: 1, ViaHelper: true})
}

// waitReady waits for the pool to hold a helper and returns its pid.
func waitReady(t *testing.T, p *helperPool) int {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		p.mu.Lock()
		n := len(p.ready)
		var pid int
		if n > 0 {
			pid = p.ready[0].cmd.Process.Pid
		}
		p.mu.Unlock()
		if n > 0 {
			return pid
		}
	}
	t.Fatal("no helper started ahead within 30s")
	return 0
}

// runOut runs a command line in kernel k and returns its exit code and
// output, and the pid of its helper.
func runOut(t *testing.T, r *ProcessRuntime, k *events.SessionSpec, line string) (code int, stdout, stderr string, pid int) {
	t.Helper()
	return execOut(t, r, k, events.RunSpec{ID: "r", Exec: line})
}

// execOut is runOut of any run.
func execOut(tb testing.TB, r *ProcessRuntime, k *events.SessionSpec, run events.RunSpec) (code int, stdout, stderr string, pid int) {
	tb.Helper()
	p, err := r.Exec(tb.Context(), k, run)
	if err != nil {
		tb.Fatalf("%+v: %v", run, err)
	}
	defer p.Close()
	var out, errb bytes.Buffer
	done := make(chan struct{})
	go func() { errb.ReadFrom(p.Stderr()); close(done) }()
	out.ReadFrom(p.Stdout())
	<-done
	code, err = p.Wait()
	if err != nil {
		tb.Fatalf("%+v: wait: %v", run, err)
	}
	pid = -1 // spawned: no helper
	if pp := p.(*process); pp.proc != nil {
		pid = pp.proc.Pid
	}
	return code, out.String(), errb.String(), pid
}

func kernelSpec(id string) *events.SessionSpec {
	return &events.SessionSpec{ID: id, Image: "python:3.11-debian12", MainKernelID: "k-" + id, Slots: map[string]string{"cpu": "1", "mem": "256m"}}
}

// TestPrestartedHelperSeesLaterKernels: a helper started before a kernel
// was created runs that kernel's execution in the kernel's own work
// directory (its mount, not the directory under it), and sees no other
// kernel; after the kernel's removal its mount is gone from the waiting
// helper's namespace too.
func TestPrestartedHelperSeesLaterKernels(t *testing.T) {
	r := prestartRuntime(t)
	first := kernelSpec("first")
	if err := r.Create(t.Context(), first); err != nil {
		t.Fatal(err)
	}
	if code, _, errs, _ := runOut(t, r, first, "/bin/true"); code != 0 {
		t.Fatalf("first: exit %d %q", code, errs)
	}
	pid := waitReady(t, r.sb.pool)

	later := kernelSpec("later")
	if err := r.Create(t.Context(), later); err != nil {
		t.Fatal(err)
	}
	if err := r.WriteFile(later.MainKernelID, "given", []byte("from the agent\n")); err != nil {
		t.Fatal(err)
	}
	code, out, errs, used := runOut(t, r, later, "/bin/sh -c 'cat given; echo made >made; cat /proc/self/mountinfo'")
	if used != pid {
		t.Errorf("the execution's helper is pid %d, want the one started ahead (%d)", used, pid)
	}
	if code != 0 || !strings.HasPrefix(out, "from the agent\n") {
		t.Fatalf("later: exit %d, stdout %q, stderr %q", code, out, errs)
	}
	if strings.Contains(out, first.MainKernelID) || strings.Contains(out, r.root) {
		t.Errorf("the execution sees the host's kernels:\n%s", out)
	}
	dir, _ := r.WorkDir(later.MainKernelID)
	if b, err := os.ReadFile(filepath.Join(dir, "made")); err != nil || string(b) != "made\n" || !isMountPoint(dir) {
		t.Errorf("the execution's file on the host: %q, %v (work dir mounted: %v)", b, err, isMountPoint(dir))
	}

	// A helper waiting now holds a copy of every kernel's mount; the
	// removal of one reaches it.
	pid = waitReady(t, r.sb.pool)
	if err := r.Destroy(t.Context(), later); err != nil {
		t.Fatal(err)
	}
	mi, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(mi), later.MainKernelID) {
		t.Errorf("the removed kernel's mount stays in the waiting helper's namespace:\n%s", mi)
	}
	if !strings.Contains(string(mi), first.MainKernelID) {
		t.Errorf("the waiting helper's namespace lacks the first kernel's mount:\n%s", mi)
	}
}

// TestPrestartedHelperFaults: a helper started ahead that died waiting,
// or waited past helperMaxAge, is not used (the execution gets a helper
// of its own); one given a work directory that is not the kernel's mount
// refuses it; the pool's close leaves no helper running.
func TestPrestartedHelperFaults(t *testing.T) {
	r := prestartRuntime(t)
	k := kernelSpec("faults")
	if err := r.Create(t.Context(), k); err != nil {
		t.Fatal(err)
	}
	runOut(t, r, k, "/bin/true")

	// Killed while it waits.
	pid := waitReady(t, r.sb.pool)
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	// Dead, every thread (its files closed), and not yet reaped:
	// waitid(P_PID, pid, WEXITED|WNOWAIT).
	var info [128]byte
	for {
		_, _, e := syscall.Syscall6(syscall.SYS_WAITID, 1, uintptr(pid), uintptr(unsafe.Pointer(&info[0])), 4|0x1000000, 0, 0)
		if e == 0 {
			break
		}
		if e != syscall.EINTR {
			t.Fatalf("waitid: %v", e)
		}
	}
	code, out, errs, used := runOut(t, r, k, "/bin/echo after-a-death")
	if code != 0 || out != "after-a-death\n" || used == pid {
		t.Errorf("after the waiting helper's death: exit %d, %q %q, helper %d (the dead one %d)", code, out, errs, used, pid)
	}

	// Too old.
	pid = waitReady(t, r.sb.pool)
	r.sb.pool.mu.Lock()
	old := r.sb.pool.ready[0]
	old.at = old.at.Add(-2 * r.sb.pool.maxAge)
	r.sb.pool.mu.Unlock()
	if code, _, _, used := runOut(t, r, k, "/bin/true"); code != 0 || used == pid {
		t.Errorf("past its age: exit %d, helper %d (the old one %d)", code, used, pid)
	}
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("the helper let go for its age still runs: %v", err)
	}

	// A work directory on another device than the one the agent saw.
	pid = waitReady(t, r.sb.pool)
	h := r.sb.pool.take(r.sb.pool.flags)
	if h == nil || h.cmd.Process.Pid != pid {
		t.Fatalf("took %v, want pid %d", h, pid)
	}
	dir, _ := r.WorkDir(k.MainKernelID)
	var st syscall.Stat_t
	if err := syscall.Stat(filepath.Dir(dir), &st); err != nil {
		t.Fatal(err)
	}
	spec := []byte(`{"argv":["/bin/true"],"work_dir":"` + dir + `","work_dir_dev":` + strconv.FormatUint(st.Dev, 10) + `}`)
	p, err := h.process(spec)
	if err != nil {
		t.Fatal(err)
	}
	var errb bytes.Buffer
	errb.ReadFrom(p.Stderr())
	if code, _ := p.Wait(); code != 127 || !strings.Contains(errb.String(), "not the kernel's mount") {
		t.Errorf("work dir on the wrong device: exit %d, stderr %q", code, errb.String())
	}
	p.Close()

	// Close lets the waiting one go.
	pid = waitReady(t, r.sb.pool)
	r.sb.pool.close()
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("a helper still runs after the pool's close: %v", err)
	}
	if code, _, _, _ := runOut(t, r, k, "/bin/true"); code != 0 {
		t.Errorf("after the pool's close: exit %d", code)
	}
}

// TestPrestartedHelpersRenewed: on an idle agent a helper past its age is
// replaced by a new one without any execution asking.
func TestPrestartedHelpersRenewed(t *testing.T) {
	r := prestartRuntime(t)
	r.sb.pool.mu.Lock()
	r.sb.pool.maxAge = 300 * time.Millisecond
	r.sb.pool.mu.Unlock()
	k := kernelSpec("renewed")
	if err := r.Create(t.Context(), k); err != nil {
		t.Fatal(err)
	}
	renewed := func(pid int) {
		t.Helper()
		for deadline := time.Now().Add(30 * time.Second); waitReady(t, r.sb.pool) == pid; time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("helper %d still waits, past its age", pid)
			}
		}
		for deadline := time.Now().Add(30 * time.Second); !errors.Is(syscall.Kill(pid, 0), syscall.ESRCH); time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("the renewed helper %d still runs", pid)
			}
		}
	}
	runOut(t, r, k, "/bin/true")
	renewed(waitReady(t, r.sb.pool))
	// One taken before the renewal is due: the one started in its place
	// is renewed in its own time.
	runOut(t, r, k, "/bin/true")
	renewed(waitReady(t, r.sb.pool))
}

// TestKernelsRootIsATmpfs: the kernels' root is a tmpfs of the agent's
// own from the first look at it. What a reboot left there (the empty
// directories of kernels whose mounts went with it) is removed, so
// Exists says those kernels are gone rather than handing their empty
// directories on the host's disk back; a directory that is not empty
// stays, untouched. A clean stop with a kernel left keeps the tmpfs
// (and the kernel), one with none unmounts it; a restart finds the
// kernel again.
func TestKernelsRootIsATmpfs(t *testing.T) {
	root := t.TempDir()
	gone := kernelSpec("gone")
	if err := os.Mkdir(filepath.Join(root, gone.MainKernelID), 0o700); err != nil {
		t.Fatal(err)
	}
	kept := filepath.Join(root, "not-empty", "file")
	if err := os.MkdirAll(filepath.Dir(kept), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(kept, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	r := sandboxRuntimeAt(t, root, SandboxOptions{Prestart: -1})
	if ok, err := r.Exists(t.Context(), gone); err != nil || ok {
		t.Fatalf("a kernel a reboot left: exists %v (%v), want false", ok, err)
	}
	if mounted, under, source, err := rootMounts(root); err != nil || !mounted || under || source != sandboxinit.KernelsRootSource {
		t.Fatalf("kernels' root: mounted %v, under %v, source %q (%v)", mounted, under, source, err)
	}
	k := kernelSpec("live")
	if err := r.Create(t.Context(), k); err != nil {
		t.Fatal(err)
	}
	if code, _, errs, _ := runOut(t, r, k, "echo hi > f; cat f"); code != 0 {
		t.Fatalf("exit %d %q", code, errs)
	}
	if err := r.Detach(); err != nil {
		t.Fatal(err)
	}
	if mounted, under, _, err := rootMounts(root); err != nil || !mounted || !under {
		t.Fatalf("after a clean stop with a kernel left: mounted %v, under %v (%v)", mounted, under, err)
	}
	// The next start finds the kernel and its file.
	again := NewProcessRuntime(root, nil)
	again.Sandbox(SandboxOptions{Prestart: -1})
	if ok, err := again.Exists(t.Context(), k); err != nil || !ok {
		t.Fatalf("after the restart: exists %v (%v)", ok, err)
	}
	if data, err := os.ReadFile(filepath.Join(root, k.MainKernelID, "f")); err != nil || string(data) != "hi\n" {
		t.Fatalf("the kernel's file after the restart: %q, %v", data, err)
	}
	if err := again.Destroy(t.Context(), k); err != nil {
		t.Fatal(err)
	}
	if err := again.Detach(); err != nil {
		t.Fatal(err)
	}
	if mounted, _, _, err := rootMounts(root); err != nil || mounted {
		t.Fatalf("after a clean stop with no kernel: mounted %v (%v)", mounted, err)
	}
	if _, err := os.Stat(filepath.Join(root, gone.MainKernelID)); !os.IsNotExist(err) {
		t.Errorf("the empty directory a reboot left: %v, want it removed", err)
	}
	if data, err := os.ReadFile(kept); err != nil || string(data) != "x" {
		t.Errorf("a directory that was not empty: %q, %v", data, err)
	}
}
