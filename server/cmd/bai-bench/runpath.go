package main

import (
	"context"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/bai-sh/bai/pkg/events"
	"github.com/bai-sh/bai/services/agent"
)

// runpathScenario breaks one execution's agent side into parts, each timed
// -cli-runs times, interleaved, after two warm-up rounds: the interpreter
// bare; through the process runtime unsandboxed; the sandbox's own cost
// (a shell builtin in it); the interpreter in it; and the sandbox helper
// run by hand with parts of its set-up left out, to see which part costs
// what. Then the client side, in parts (runpathClient).
func runpathScenario(ctx context.Context, o options) error {
	python, err := findPython()
	if err != nil {
		return err
	}
	helper, err := sandboxHelper()
	if err != nil {
		return err
	}
	fmt.Printf("interpreter %s; sandbox helper %s; euid %d\n", python, helper, os.Geteuid())
	interp := map[string]string{"python": python}
	// The join of a cgroup after a quiet spell, with the cgroup2 mount as
	// found, then as the sandbox leaves it (it turns favordynmods on).
	joinRows := func(when string) {
		if os.Geteuid() != 0 {
			return
		}
		state := agent.FavorDynMods()
		ds, err := cgroupJoinAfterQuiet(10, 100*time.Millisecond)
		if err != nil {
			fmt.Printf("cgroup join after 100 ms quiet, %s: %v\n", when, err)
			return
		}
		printLat(fmt.Sprintf("cgroup join after 100 ms quiet, %s (favordynmods %s)", when, state), ds)
	}
	joinRows("as found")
	defer joinRows("after the sandbox's set-up")
	plain := agent.NewProcessRuntime(filepath.Join(o.dir, "plain"), interp)
	plain.Sandbox(agent.SandboxOptions{Disable: true})
	sb := agent.NewProcessRuntime(filepath.Join(o.dir, "sandboxed"), interp)
	if notes := sb.Sandbox(agent.SandboxOptions{Helper: helper}); len(notes) > 0 {
		fmt.Printf("sandbox notes: %s\n", strings.Join(notes, "; "))
	}
	if !sb.Sandboxed() {
		return fmt.Errorf("runpath: no sandbox here (root is needed)")
	}
	defer sb.Detach() // last: its kernel goes first (below)
	k := &events.SessionSpec{ID: "rp", MainKernelID: "rp-k0", Image: "python", Slots: map[string]string{"cpu": "1", "mem": "1073741824"}}
	for _, r := range []*agent.ProcessRuntime{plain, sb} {
		if err := r.Prepare(ctx, k); err != nil {
			return err
		}
		if err := r.Create(ctx, k); err != nil {
			return err
		}
		defer r.Destroy(context.Background(), k)
	}
	execOne := func(r *agent.ProcessRuntime, run events.RunSpec, want string) func() (time.Duration, error) {
		return func() (time.Duration, error) {
			t0 := time.Now()
			p, err := r.Exec(ctx, k, run)
			if err != nil {
				return 0, err
			}
			defer p.Close()
			out, _ := io.ReadAll(p.Stdout())
			errOut, _ := io.ReadAll(p.Stderr())
			code, err := p.Wait()
			d := time.Since(t0)
			if err != nil || code != 0 || strings.TrimSpace(string(out)) != want {
				return 0, fmt.Errorf("exec %+v: code %d, %v, out %q, err %q", run, code, err, out, errOut)
			}
			return d, nil
		}
	}
	// The helper by hand: its spec as the runtime makes it, less a part.
	wd := filepath.Join(o.dir, "sandboxed", k.MainKernelID)
	base := helperSpec{
		Argv: []string{python, "-c", "print(1)"}, WorkDir: wd,
		Env:  []string{"PATH=/usr/local/bin:/usr/bin:/bin", "HOME=/home/work", "LANG=C.UTF-8", "TMPDIR=/tmp"},
		Hide: []string{o.dir}, UID: kernelUID(k.MainKernelID), Hostname: "rp", TmpSize: 256 << 20, ShmSize: 64 << 20, NoFile: 1024,
		Cgroups: sb.CgroupJoinFiles(k.MainKernelID),
	}
	allNS := uintptr(syscall.CLONE_NEWPID | syscall.CLONE_NEWNS | syscall.CLONE_NEWIPC | syscall.CLONE_NEWUTS | syscall.CLONE_NEWNET)
	byHand := func(spec helperSpec, flags uintptr, env ...string) func() (time.Duration, error) {
		data, _ := json.Marshal(spec)
		return func() (time.Duration, error) {
			cmd := &exec.Cmd{Path: helper, Args: []string{"bai-sandbox"}, Dir: "/",
				Env:         append([]string{"_BAI_SANDBOX_INIT=" + string(data)}, env...),
				SysProcAttr: &syscall.SysProcAttr{Setpgid: true, Cloneflags: flags}}
			t0 := time.Now()
			out, err := cmd.CombinedOutput()
			d := time.Since(t0)
			if err != nil || strings.TrimSpace(string(out)) != "1" {
				return 0, fmt.Errorf("helper by hand: %v: %q", err, out)
			}
			lastCPU = cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
			return d, nil
		}
	}
	bare := func(argv ...string) func() (time.Duration, error) {
		return func() (time.Duration, error) {
			t0 := time.Now()
			cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
			out, err := cmd.CombinedOutput()
			d := time.Since(t0)
			if err == nil {
				lastCPU = cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
			}
			if err != nil || strings.TrimSpace(string(out)) != "1" {
				return 0, fmt.Errorf("%s: %v: %q", argv, err, out)
			}
			return d, nil
		}
	}
	// The helper traced: each set-up step's wall and CPU time.
	type stepTimes struct{ wall, cpu []time.Duration }
	steps := map[string]*stepTimes{}
	var order []string
	traced := func(argv ...string) func() (time.Duration, error) {
		spec := withArgv(base, argv...)
		spec.Trace = true
		data, _ := json.Marshal(spec)
		return func() (time.Duration, error) {
			var stdout, stderr strings.Builder
			cmd := &exec.Cmd{Path: helper, Args: []string{"bai-sandbox"}, Dir: "/",
				Env:    []string{"_BAI_SANDBOX_INIT=" + string(data)},
				Stdout: &stdout, Stderr: &stderr,
				SysProcAttr: &syscall.SysProcAttr{Setpgid: true, Cloneflags: allNS}}
			t0 := time.Now()
			err := cmd.Run()
			d := time.Since(t0)
			if err != nil || strings.TrimSpace(stdout.String()) != "1" {
				return 0, fmt.Errorf("helper traced: %v: %q %q", err, stdout.String(), stderr.String())
			}
			lastCPU = cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
			for _, line := range strings.Split(stderr.String(), "\n") {
				var name string
				var w, c int64
				if n, _ := fmt.Sscanf(line, "bai-trace %s %d %d", &name, &w, &c); n != 3 {
					continue
				}
				st := steps[name]
				if st == nil {
					st = &stepTimes{}
					steps[name] = st
					order = append(order, name)
				}
				st.wall = append(st.wall, time.Duration(w)*time.Microsecond)
				st.cpu = append(st.cpu, time.Duration(c)*time.Microsecond)
			}
			return d, nil
		}
	}
	noNet := allNS &^ syscall.CLONE_NEWNET
	parts := []struct {
		name string
		f    func() (time.Duration, error)
	}{
		{"bare python3 -c 'print(1)'", bare(python, "-c", "print(1)")},
		{"bare /bin/echo 1", bare("/bin/echo", "1")},
		{"runtime, no sandbox: python", execOne(plain, events.RunSpec{ID: "a", Code: "print(1)"}, "1")},
		{"runtime, sandboxed: sh -c 'echo 1'", execOne(sb, events.RunSpec{ID: "b", Exec: "echo 1"}, "1")},
		{"runtime, sandboxed: python", execOne(sb, events.RunSpec{ID: "c", Code: "print(1)"}, "1")},
		{"helper by hand, all namespaces: python", byHand(base, allNS)},
		{"helper by hand, no net namespace: python", byHand(base, noNet)},
		{"helper by hand, all, echo 1", byHand(withArgv(base, "/bin/echo", "1"), allNS)},
		{"helper by hand, GOMAXPROCS=1 GOGC=off: echo 1", byHand(withArgv(base, "/bin/echo", "1"), allNS, "GOMAXPROCS=1", "GOGC=off")},
		{"helper by hand, python -I", byHand(withArgv(base, python, "-I", "-c", "print(1)"), allNS)},
		{"helper by hand, python -S", byHand(withArgv(base, python, "-S", "-c", "print(1)"), allNS)},
		{"helper by hand, uid 0: python", byHand(withUID(base, 0), allNS)},
		{"helper by hand, traced: echo 1", traced("/bin/echo", "1")},
	}
	res := make([][]time.Duration, len(parts))
	cpus := make([][]time.Duration, len(parts))
	for i := range o.cliRuns + 2 {
		for j, p := range parts {
			lastCPU = 0
			d, err := p.f()
			if err != nil {
				return fmt.Errorf("%s: %w", p.name, err)
			}
			if i >= 2 {
				res[j] = append(res[j], d)
				if lastCPU > 0 {
					cpus[j] = append(cpus[j], lastCPU)
				}
			}
		}
	}
	fmt.Printf("%d runs of each, interleaved, after 2 warm-up rounds (wall, from the start call to exit and EOF):\n", o.cliRuns)
	for j, p := range parts {
		printLat(p.name, res[j])
	}
	fmt.Printf("CPU time (user+sys of the process and its reaped children; steadier than wall on a shared machine):\n")
	for j, p := range parts {
		if len(cpus[j]) > 0 {
			printLat(p.name, cpus[j])
		}
	}
	if len(order) == 0 {
		return fmt.Errorf("runpath: the traced helper reported no steps")
	}
	fmt.Printf("the helper's steps (traced runs of echo 1; wall, then the helper's own CPU):\n")
	for _, name := range order {
		printLat("  "+name+" wall", steps[name].wall)
		printLat("  "+name+" cpu", steps[name].cpu)
	}
	if err := runpathClient(ctx, o); err != nil {
		return err
	}
	if la, err := os.ReadFile("/proc/loadavg"); err == nil {
		fmt.Printf("load average at the end: %s", la)
	}
	return nil
}

// lastCPU is the CPU time of the last part's process, where it is known.
var lastCPU time.Duration

func withArgv(s helperSpec, argv ...string) helperSpec {
	s.Argv = argv
	return s
}

func withUID(s helperSpec, uid int) helperSpec {
	s.UID = uid
	return s
}

func findPython() (string, error) {
	python := "/usr/bin/python3"
	if _, err := os.Stat(python); err == nil {
		return python, nil
	}
	return exec.LookPath("python3")
}

// sandboxHelper is bai-sandbox-init next to this binary, else this binary.
func sandboxHelper() (string, error) {
	self, err := os.Executable()
	if err != nil {
		return "", err
	}
	if h := filepath.Join(filepath.Dir(self), "bai-sandbox-init"); func() bool { _, err := os.Stat(h); return err == nil }() {
		return h, nil
	}
	return self, nil
}

// helperSpec is the sandbox helper's spec (services/agent/internal/sandboxinit.Spec,
// which is internal to the agent), the fields the bench sets.
type helperSpec struct {
	Argv     []string `json:"argv"`
	Env      []string `json:"env"`
	WorkDir  string   `json:"work_dir"`
	Hide     []string `json:"hide"`
	UID      int      `json:"uid"`
	Hostname string   `json:"hostname"`
	TmpSize  int64    `json:"tmp_size"`
	ShmSize  int64    `json:"shm_size"`
	NoFile   uint64   `json:"nofile"`
	Cgroups  []string `json:"cgroups"`
	Trace    bool     `json:"trace,omitempty"`
}

// kernelUID is the agent's uid of a kernel (services/agent kernelUID).
func kernelUID(kernelID string) int {
	h := fnv.New32a()
	h.Write([]byte(kernelID))
	return 1<<20 + int(h.Sum32()%(1<<20))
}
