package agent

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/bai-sh/bai/internal/natstest"
	"github.com/bai-sh/bai/pkg/events"
	"github.com/bai-sh/bai/services/agent/internal/sandboxinit"
)

// spawnRuntime is a sandboxed runtime whose executions start without a
// helper (sandboxinit.Spawn); the test is skipped where they cannot.
func spawnRuntime(t *testing.T) *ProcessRuntime {
	t.Helper()
	if os.Getenv(sandboxinit.NoSpawnEnv) != "" || !sandboxinit.CanSpawn() {
		t.Skip("SKIP: executions start through the helper here")
	}
	r := sandboxRuntime(t, SandboxOptions{})
	if r.sb.server == nil || r.sb.pool != nil {
		t.Fatalf("spawn server %v, pool %v: want executions started without a helper, and no helpers started ahead", r.sb.server, r.sb.pool)
	}
	return r
}

// mountCount is how many mounts this process's namespace has.
func mountCount(t *testing.T) int {
	t.Helper()
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	return bytes.Count(data, []byte("\n"))
}

// TestSpawnedExecution: an execution started without the helper binary
// is its namespace's second process, under an init it cannot see (the
// agent's clone, whose command line is the agent's), in its sandbox (its
// uid, its host name, its work directory, no descriptor but its own);
// what it leaves running ends with it; a set-up that fails half-way says
// why on its stderr with exit 127 and leaves the host's mounts as they
// were; an argument with a NUL byte, or a cgroup that is not there, is
// refused before anything starts. A spawn server killed loses no
// execution: those it started run on, and the next gets a new server.
func TestSpawnedExecution(t *testing.T) {
	r := spawnRuntime(t)
	k := kernelSpec("spawned")
	if err := r.Create(t.Context(), k); err != nil {
		t.Fatal(err)
	}
	uid := kernelUID(k.MainKernelID)
	code, out, errs, _ := runOut(t, r, k, `echo $$ $(id -u) $(hostname) $(pwd); cat /proc/1/cmdline || echo hidden`)
	want := strings.Join([]string{"2", strconv.Itoa(uid), hostname(k.MainKernelID), KernelWorkDir}, " ") + "\nhidden\n"
	if code != 0 || out != want {
		t.Fatalf("exit %d, %q %q; want %q", code, out, errs, want)
	}
	// The execution has its stdin, stdout and stderr, and no other
	// descriptor (its init's report pipe least of all): ls's own is 3.
	if code, out, errs, _ := runOut(t, r, k, "/bin/ls /proc/self/fd"); code != 0 || out != "0\n1\n2\n3\n" {
		t.Errorf("the execution's descriptors: exit %d, %q %q; want 0 to 3", code, out, errs)
	}
	// A child left running ends with the execution: a process of the
	// kernel's uid that outlives it is found on the host.
	if code, _, errs, _ := runOut(t, r, k, "sleep 1000 & echo started"); code != 0 {
		t.Fatalf("background: exit %d %q", code, errs)
	}
	if left := processesOf(t, uid); len(left) > 0 {
		t.Errorf("processes of the kernel's uid after its execution ended: %v", left)
	}

	// The init holds none of the agent's or the spawn server's files.
	p, err := r.Exec(t.Context(), k, events.RunSpec{ID: "long", Exec: "echo started; sleep 1000"})
	if err != nil {
		t.Fatal(err)
	}
	initPID := initPID(t, p.(*process))
	if line, err := bufio.NewReader(p.Stdout()).ReadString('\n'); line != "started\n" { // the set-up is done
		t.Fatalf("long: %q, %v", line, err)
	}
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", initPID))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		target, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", initPID, e.Name()))
		if err != nil {
			target = err.Error()
		}
		if !strings.HasPrefix(target, "pipe:") && target != os.DevNull && !strings.HasPrefix(target, "/sys/fs/cgroup/") && !strings.HasPrefix(target, "/home/work") {
			info, _ := os.ReadFile(fmt.Sprintf("/proc/%d/fdinfo/%s", initPID, e.Name()))
			t.Errorf("the init holds descriptor %s: %s %s", e.Name(), target, info)
		}
	}
	p.Kill()
	p.Wait()
	p.Close()

	// The spawn server killed: the execution it started runs on and
	// reports its code; the next execution gets a new server.
	p, err = r.Exec(t.Context(), k, events.RunSpec{ID: "through", Exec: "echo started; sleep 0.3; echo done"})
	if err != nil {
		t.Fatal(err)
	}
	out2 := bufio.NewReader(p.Stdout())
	if line, err := out2.ReadString('\n'); line != "started\n" {
		t.Fatalf("through: %q, %v", line, err)
	}
	r.sb.server.mu.Lock()
	server := r.sb.server.cmd.Process
	r.sb.server.mu.Unlock()
	if err := server.Kill(); err != nil {
		t.Fatal(err)
	}
	if rest, _ := io.ReadAll(out2); string(rest) != "done\n" {
		t.Errorf("after the server's kill: %q, want done", rest)
	}
	if code, err := p.Wait(); code != 0 || err != nil {
		t.Errorf("after the server's kill: exit %d (%v)", code, err)
	}
	p.Close()
	if code, out, errs, _ := runOut(t, r, k, "/bin/echo again"); code != 0 || out != "again\n" {
		t.Errorf("the next execution: exit %d, %q %q", code, out, errs)
	}
	r.sb.server.mu.Lock()
	if r.sb.server.cmd.Process.Pid == server.Pid {
		t.Error("the same server after its kill")
	}
	serverPid := r.sb.server.cmd.Process.Pid
	r.sb.server.mu.Unlock()

	// The server serves in a namespace of its own, without the kernels'
	// mounts; the host keeps them.
	work, err := r.WorkDir(k.MainKernelID)
	if err != nil {
		t.Fatal(err)
	}
	if host, _ := os.ReadFile("/proc/self/mountinfo"); !bytes.Contains(host, []byte(" "+work+" ")) {
		t.Errorf("the host's mountinfo lost the kernel's work dir %s", work)
	}
	threads := serverThreads(serverPid)
	without := 0
	for _, mounts := range threads {
		if !bytes.Contains(mounts, []byte(" "+r.root)) {
			without++
		}
	}
	if without != 1 {
		t.Errorf("%d of the server's %d threads have a namespace without the kernels' root %s, want 1", without, len(threads), r.root)
	}

	dir, err := r.WorkDir(k.MainKernelID)
	if err != nil {
		t.Fatal(err)
	}
	var st, parent syscall.Stat_t
	if err := syscall.Stat(dir, &st); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Stat(filepath.Dir(dir), &parent); err != nil {
		t.Fatal(err)
	}
	base := initSpec{
		Argv: []string{"/bin/true"}, WorkDir: dir, WorkDirDev: st.Dev, UID: uid,
		Hide: []string{filepath.Dir(r.root)}, KernelsRoot: r.root, Hostname: "h",
	}
	before := mountCount(t)
	var missing string // a cgroup of the kernel's hierarchy that is not there
	if r.sb.cg != nil {
		join := r.sb.cg.joinFiles(k.MainKernelID)
		base.Cgroups = join
		missing = filepath.Join(filepath.Dir(join[0]), "missing", filepath.Base(join[0]))
	}
	for _, c := range []struct {
		name, want string
		change     func(*initSpec)
	}{
		{"host name too long", "bai: sandbox: set host name: invalid argument\n", func(s *initSpec) { s.Hostname = strings.Repeat("h", 100) }},
		{"no such command", "bai: sandbox: start /no/such: no such file or directory\n", func(s *initSpec) { s.Argv = []string{"/no/such"} }},
	} {
		spec := base
		c.change(&spec)
		p, err := r.spawnProcess(&spec, r.sb.cloneFlags(false))
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		var errb bytes.Buffer
		errb.ReadFrom(p.Stderr())
		if code, err := p.Wait(); code != 127 || err != nil || errb.String() != c.want {
			t.Errorf("%s: exit %d (%v), stderr %q; want 127 and %q", c.name, code, err, errb.String(), c.want)
		}
		p.Close()
		if n := mountCount(t); n != before {
			t.Errorf("%s: the host has %d mounts, %d before", c.name, n, before)
		}
	}
	// Refused before anything starts.
	for name, change := range map[string]func(*initSpec){
		// Its mount copied for the spawn server: not the kernel's.
		"work dir on another device":  func(s *initSpec) { s.WorkDirDev = parent.Dev },
		"an argument with a NUL byte": func(s *initSpec) { s.Argv = []string{"/bin/echo", "a\x00b"} },
		"a cgroup that is not there": func(s *initSpec) {
			if missing != "" {
				s.Cgroups = append([]string{missing}, s.Cgroups[1:]...)
			} else {
				s.Cgroups = []string{"/no/such/cgroup.procs"}
			}
		},
	} {
		spec := base
		change(&spec)
		if p, err := r.spawnProcess(&spec, r.sb.cloneFlags(false)); err == nil {
			p.Close()
			t.Errorf("%s: started", name)
		}
	}
	if n := mountCount(t); n != before {
		t.Errorf("the host has %d mounts, %d before", n, before)
	}
}

// initPID is the pid of a spawned execution's init.
func initPID(t *testing.T, p *process) int {
	t.Helper()
	info, err := os.ReadFile(fmt.Sprintf("/proc/self/fdinfo/%d", p.pidfd.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(info), "\n") {
		if v, ok := strings.CutPrefix(line, "Pid:"); ok {
			pid, _ := strconv.Atoi(strings.TrimSpace(v))
			return pid
		}
	}
	t.Fatalf("no pid in %q", info)
	return 0
}

// TestSpawnChurn: executions of quick kernels started and ended 32 at a
// time, as a batch makes them, all exit 0. An init that ended and was
// reaped before the server took a pidfd of it once failed its start
// ("pidfd of N: no such process"): the clone makes the pidfd now.
func TestSpawnChurn(t *testing.T) {
	r := spawnRuntime(t)
	var wg sync.WaitGroup
	var n atomic.Int64
	for g := range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 10 {
				k := kernelSpec(fmt.Sprint("st", g, "-", i))
				if err := r.Create(t.Context(), k); err != nil {
					t.Error(err)
					return
				}
				code, out, errs, _ := execOut(t, r, k, events.RunSpec{ID: "r", Exec: "/bin/true"})
				if code != 0 {
					t.Errorf("exit %d %q %q", code, out, errs)
				}
				n.Add(1)
				if err := r.Destroy(t.Context(), k); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	if n.Load() != 320 {
		t.Errorf("%d runs of 320", n.Load())
	}
}

// processesOf lists the host's processes of uid.
func processesOf(t *testing.T, uid int) []string {
	t.Helper()
	ents, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var found []string
	for _, e := range ents {
		var st syscall.Stat_t
		if e.Name()[0] < '0' || e.Name()[0] > '9' || syscall.Stat("/proc/"+e.Name(), &st) != nil || int(st.Uid) != uid {
			continue
		}
		cmd, _ := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		found = append(found, e.Name()+" "+strings.ReplaceAll(string(cmd), "\x00", " "))
	}
	return found
}

// serverThreads are the mountinfo of each thread of process pid, by its
// /proc/PID/task/TID directory.
func serverThreads(pid int) map[string][]byte {
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*", pid))
	threads := map[string][]byte{}
	for _, task := range tasks {
		if data, err := os.ReadFile(filepath.Join(task, "mountinfo")); err == nil {
			threads[task] = data
		}
	}
	return threads
}

// TestSpawnServerFollowsHostMounts: the spawn server's namespace follows
// the host's, where the host's mounts are private too: a file system the
// operator mounts on the host after the server started shows, read-only,
// in executions (within sandboxinit.MountsRecheck), and is gone from them
// and from the idle server (nothing holds it) once unmounted on the host;
// kernels that come and go do not make the namespace again.
func TestSpawnServerFollowsHostMounts(t *testing.T) {
	r := spawnRuntime(t)
	k := kernelSpec("follows")
	if err := r.Create(t.Context(), k); err != nil {
		t.Fatal(err)
	}
	// The server is started by the first execution.
	if code, _, errs, _ := runOut(t, r, k, "true"); code != 0 {
		t.Fatalf("first: exit %d %q", code, errs)
	}
	// Not under /tmp: the sandbox has a /tmp of its own.
	dir, err := os.MkdirTemp("/run", "bai-test-follows-")
	if err != nil {
		t.Skipf("no /run here: %v", err)
	}
	t.Cleanup(func() { os.Remove(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size=64k"); err != nil {
		t.Fatal(err)
	}
	mounted := true
	t.Cleanup(func() {
		if mounted {
			syscall.Unmount(dir, syscall.MNT_DETACH)
		}
	})
	if err := os.WriteFile(filepath.Join(dir, "data"), []byte("dataset\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// The server looks at the host's mounts at most every 100 ms.
	read := "cat " + dir + "/data 2>&1; touch " + dir + "/x 2>/dev/null && echo wrote; true"
	var out string
	for deadline := time.Now().Add(5 * time.Second); out != "dataset\n" && time.Now().Before(deadline); {
		_, out, _, _ = runOut(t, r, k, read)
	}
	if out != "dataset\n" {
		t.Errorf("mounted on the host: %q; want the file, read-only", out)
	}
	if err := syscall.Unmount(dir, 0); err != nil {
		t.Fatalf("unmount on the host: %v (busy: the server's namespace holds it)", err)
	}
	mounted = false
	// The idle server lets it go too, without a request.
	r.sb.server.mu.Lock()
	pid := r.sb.server.cmd.Process.Pid
	r.sb.server.mu.Unlock()
	holding := func() (held []string) {
		for task, mounts := range serverThreads(pid) {
			if bytes.Contains(mounts, []byte(" "+dir+" ")) {
				held = append(held, task)
			}
		}
		return held
	}
	natstest.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		if held := holding(); len(held) > 0 {
			return fmt.Errorf("the idle server still has %s: %v", dir, held)
		}
		return nil
	})
	if code, out, errs, _ := runOut(t, r, k, "ls -A "+dir); code != 0 || out != "" {
		t.Errorf("unmounted on the host: exit %d, %q %q; want an empty directory", code, out, errs)
	}
	// The kernels' own mounts and unmounts do not make the namespace
	// again: the server's thread stays in the one it has.
	ino := func() uint64 { // of the serving thread's namespace
		for task, mounts := range serverThreads(pid) {
			var st syscall.Stat_t
			if !bytes.Contains(mounts, []byte(" "+r.root)) && syscall.Stat(filepath.Join(task, "ns", "mnt"), &st) == nil {
				return st.Ino
			}
		}
		return 0
	}
	before := ino()
	for i := range 5 {
		o := kernelSpec(fmt.Sprint("churn-", i))
		if err := r.Create(t.Context(), o); err != nil {
			t.Fatal(err)
		}
		if code, _, errs, _ := runOut(t, r, o, "true"); code != 0 {
			t.Fatalf("churn %d: exit %d %q", i, code, errs)
		}
		if err := r.Destroy(t.Context(), o); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(2 * sandboxinit.MountsRecheck) // the server's last look at the host's mounts is done
	if after := ino(); before == 0 || after != before {
		t.Errorf("the server's namespace %d, %d before five kernels came and went: made again for the kernels' own mounts", after, before)
	}
}
