package agent_test

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/rs/zerolog"

	"github.com/bai-sh/bai/internal/natstest"
	"github.com/bai-sh/bai/pkg/events"
	"github.com/bai-sh/bai/services/agent"
)

// needSandbox skips a test, visibly, where the process runtime cannot
// contain its kernels (not root, no namespaces, no cgroups).
func needSandbox(t *testing.T) {
	t.Helper()
	r := agent.NewProcessRuntime(t.TempDir(), nil)
	notes := r.Sandbox(agent.SandboxOptions{})
	if err := r.Purge(t.Context()); err != nil {
		t.Errorf("purge: %v", err)
	}
	if !r.Sandboxed() || len(notes) > 0 {
		t.Skipf("SKIP: no sandbox on this host (run as root with namespaces and cgroups): %v", notes)
	}
}

// small are the sandbox limits of the limit tests.
var small = agent.SandboxOptions{Pids: 64, WorkDirSize: 16 << 20, TmpSize: 16 << 20, NoFile: 256}

// TestSandboxLimits: a kernel that runs into one of its limits fails alone,
// with the reason on its output; the agent, the same kernel's next
// execution and a neighbour kernel keep going.
func TestSandboxLimits(t *testing.T) {
	needSandbox(t)
	t.Parallel()
	e := newEnv(t)
	a := e.start(agent.Config{DataDir: t.TempDir(), ID: "agent-1", Sandbox: small})
	sp, nb := spec("limited"), spec("neighbour")
	sp.Slots = map[string]string{"cpu": "1", "mem": "64m"}
	for _, s := range []*events.SessionSpec{sp, nb} {
		e.schedule(a, s)
		e.waitEvent(s.ID, events.EventStarted)
	}
	tests := []struct {
		name      string
		run       events.RunSpec
		exit      string // "" any non-zero, "*" any
		stdoutHas string
		stderrHas string
	}{
		// 10 GB, touched: the memory limit (64m) kills it.
		{name: "alloc-10g", run: events.RunSpec{Code: `b = b"x" * (10 << 30)`}, exit: "137", stderrHas: "bai: oom-killed"},
		// Fork until refused: the pids limit holds the bomb.
		{name: "fork-bomb", run: events.RunSpec{Code: `
import os, time
n = 0
try:
    while True:
        if os.fork() == 0:
            time.sleep(60)
            os._exit(0)
        n += 1
except OSError as e:
    print("refused after", n, e.errno)
`}, exit: "0", stdoutHas: "refused after", stderrHas: "bai: pids-limit"},
		// The shell itself may then fail to fork: any exit.
		{name: "shell-fork-bomb", run: events.RunSpec{Exec: `b() { b | b & }; b; sleep 1`}, exit: "*", stderrHas: "bai: pids-limit"},
		{name: "fill-work-dir", run: events.RunSpec{Exec: `dd if=/dev/zero of=big bs=1M count=64`}, stderrHas: "bai: disk-full"},
		{name: "fill-tmp", run: events.RunSpec{Exec: `dd if=/dev/zero of=/tmp/big bs=1M count=64`}, stderrHas: "No space left"},
		{name: "fds", run: events.RunSpec{Code: `
fs = []
try:
    while True:
        fs.append(open("/dev/null"))
except OSError as e:
    print("fds", len(fs), e.errno)
`}, exit: "0", stdoutHas: "fds 25"},
		{name: "core-dump-off", run: events.RunSpec{Exec: `ulimit -c`}, exit: "0", stdoutHas: "0"},
	}
	if _, err := os.Stat("/sys/fs/cgroup/memory/cgroup.procs"); err == nil {
		// cgroup v1: the limits from the slots (mem=64m, cpu=1) and options.
		tests = append(tests, struct {
			name      string
			run       events.RunSpec
			exit      string
			stdoutHas string
			stderrHas string
		}{name: "cgroup-v1-limits", run: events.RunSpec{Exec: `for c in memory/memory.limit_in_bytes pids/pids.max cpu/cpu.cfs_quota_us; do ` +
			`cat /sys/fs/cgroup/${c%%/*}$(grep ":${c%%/*}:" /proc/self/cgroup | cut -d: -f3)/${c#*/}; done | tr '\n' ' '`},
			exit: "0", stdoutHas: "67108864 64 100000 "})
	} else {
		t.Log("no cgroup v1 memory hierarchy: limits not read back")
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.run.ID = "r" + strconv.Itoa(i)
			e.execute(a, sp, tc.run)
			o := e.waitExit(sp.ID, tc.run.ID)
			if (tc.exit == "" && o.exit == "0") || (tc.exit != "" && tc.exit != "*" && o.exit != tc.exit) || !o.exited {
				t.Errorf("exit %q, want %q", o.exit, tc.exit)
			}
			if !strings.Contains(string(o.stdout), tc.stdoutHas) {
				t.Errorf("stdout %q, want %q in it", o.stdout, tc.stdoutHas)
			}
			if !strings.Contains(string(o.stderr), tc.stderrHas) {
				t.Errorf("stderr %.300q, want %q in it", o.stderr, tc.stderrHas)
			}
			// The same kernel runs the next execution; so does its neighbour.
			for _, s := range []*events.SessionSpec{sp, nb} {
				run := events.RunSpec{ID: "after-" + tc.run.ID, Exec: `rm -f big; echo ok`}
				e.execute(a, s, run)
				if o := e.waitExit(s.ID, run.ID); string(o.stdout) != "ok\n" || o.exit != "0" {
					t.Errorf("%s after %s: stdout %q stderr %.300q exit %q", s.ID, tc.name, o.stdout, o.stderr, o.exit)
				}
			}
		})
	}
}

// TestSandboxBatchReason: a batch task killed at its memory limit ends in
// a failure whose reason says so.
func TestSandboxBatchReason(t *testing.T) {
	needSandbox(t)
	t.Parallel()
	e := newEnv(t)
	a := e.start(agent.Config{DataDir: t.TempDir(), ID: "agent-1", Sandbox: small})
	sp := spec("batch-oom")
	sp.Slots = map[string]string{"cpu": "1", "mem": "64m"}
	sp.Type = events.TypeBatch
	sp.StartupCommand = `python3 -c 'b = b"x" * (1 << 30)'`
	e.schedule(a, sp)
	evs := e.waitEvent(sp.ID, events.EventTerminated)
	f := find(evs, events.EventFailure)
	if f == nil || f.Reason != events.ReasonOOMKilled || f.ExitCode == nil || *f.ExitCode != 137 {
		t.Fatalf("failure event %+v, want reason %s and exit 137 (events %v)", f, events.ReasonOOMKilled, names(evs))
	}
}

// TestSandboxEscapes: what a kernel must not reach, with either helper:
// the agent's binary re-executed, and the small bai-sandbox-init binary.
func TestSandboxEscapes(t *testing.T) {
	needSandbox(t)
	t.Parallel()
	t.Run("self", func(t *testing.T) { t.Parallel(); testSandboxEscapes(t, "") })
	t.Run("helper-binary", func(t *testing.T) { t.Parallel(); testSandboxEscapes(t, buildHelper(t)) })
}

// buildHelper builds cmd/bai-sandbox-init into a temporary directory.
func buildHelper(tb testing.TB) string {
	tb.Helper()
	bin := filepath.Join(tb.TempDir(), "bai-sandbox-init")
	out, err := exec.Command("go", "build", "-o", bin, "./cmd/bai-sandbox-init").CombinedOutput()
	if err != nil {
		tb.Fatalf("build helper: %v\n%s", err, out)
	}
	return bin
}

// TestSandboxBadHelper: a helper that is missing or not executable leaves
// kernels unsandboxed, and says why.
func TestSandboxBadHelper(t *testing.T) {
	needSandbox(t)
	t.Parallel()
	notExec := filepath.Join(t.TempDir(), "helper")
	if err := os.WriteFile(notExec, []byte("#!/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, h := range []string{filepath.Join(t.TempDir(), "missing"), notExec, t.TempDir()} {
		r := agent.NewProcessRuntime(t.TempDir(), nil)
		notes := r.Sandbox(agent.SandboxOptions{Helper: h})
		if r.Sandboxed() || !strings.Contains(strings.Join(notes, " "), "no helper binary") {
			t.Errorf("helper %s: sandboxed %v, notes %q", h, r.Sandboxed(), notes)
		}
		if err := r.Purge(t.Context()); err != nil {
			t.Errorf("purge: %v", err)
		}
	}
}

func testSandboxEscapes(t *testing.T, helper string) {
	e := newEnv(t)
	dir := t.TempDir()
	// Credentials next to the state db.
	if err := os.WriteFile(filepath.Join(dir, "credentials"), []byte("SECRET-CRED"), 0o600); err != nil {
		t.Fatal(err)
	}
	a := e.start(agent.Config{DataDir: dir, ID: "agent-1", Sandbox: agent.SandboxOptions{Helper: helper}})
	sp, other := spec("attacker"), spec("victim")
	for _, s := range []*events.SessionSpec{sp, other} {
		e.schedule(a, s)
		e.waitEvent(s.ID, events.EventStarted)
	}
	e.execute(a, other, events.RunSpec{ID: "plant", Exec: `echo VICTIM-DATA > secret.txt; sleep 60`})
	_, port, _ := strings.Cut(e.s.ClientURL(), "://127.0.0.1:")
	victimFile := filepath.Join(workDir(dir, other.MainKernelID), "secret.txt")

	tests := []struct {
		name string
		run  events.RunSpec
		// stdout must equal want.
		want string
	}{
		{name: "state-db", run: events.RunSpec{Exec: `cat ` + filepath.Join(dir, "agent.db") + ` >/dev/null 2>&1 && echo READ || echo denied`}, want: "denied\n"},
		{name: "credentials", run: events.RunSpec{Exec: `cat ` + filepath.Join(dir, "credentials") + ` 2>/dev/null; echo`}, want: "\n"},
		{name: "proc-1-environ", run: events.RunSpec{Exec: `cat /proc/1/environ >/dev/null 2>&1 && echo READ || echo denied`}, want: "denied\n"},
		{name: "host-processes", run: events.RunSpec{Exec: `ls /proc | grep -c '^[0-9]' | awk '{print ($1 < 10) ? "few" : "many: " $1}'`}, want: "few\n"},
		{name: "other-kernel-files", run: events.RunSpec{Exec: `cat ` + victimFile + ` 2>/dev/null; ls /home; echo end`}, want: "work\nend\n"},
		{name: "ptrace", run: events.RunSpec{Code: `
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
# PTRACE_ATTACH the agent (a host pid), this namespace's init (root), and
# every other process visible.
res = [libc.ptrace(16, pid, 0, 0) for pid in [` + strconv.Itoa(os.Getpid()) + `, 1]]
print(res)
`}, want: "[-1, -1]\n"},
		{name: "nats-port", run: events.RunSpec{Code: connectCode(port)}, want: "refused\n"},
		{name: "uid", run: events.RunSpec{Exec: `[ "$(id -u)" != 0 ] && echo unprivileged`}, want: "unprivileged\n"},
		{name: "hostname", run: events.RunSpec{Exec: `hostname`}, want: sp.MainKernelID + "\n"},
		{name: "setuid-root", run: events.RunSpec{Exec: `grep NoNewPrivs /proc/self/status | tr -d '\t '`}, want: "NoNewPrivs:1\n"},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.run.ID = "r" + strconv.Itoa(i)
			e.execute(a, sp, tc.run)
			o := e.waitExit(sp.ID, tc.run.ID)
			if string(o.stdout) != tc.want {
				t.Errorf("stdout %q (stderr %.300q), want %q", o.stdout, o.stderr, tc.want)
			}
		})
	}
	// The victim's file is there, for its own kernel.
	e.execute(a, other, events.RunSpec{ID: "check", Exec: `cat secret.txt`})
	if o := e.waitExit(other.ID, "check"); string(o.stdout) != "VICTIM-DATA\n" {
		t.Errorf("victim reads %q", o.stdout)
	}
}

// connectCode is python that prints whether it could connect to port on
// 127.0.0.1: "connected" or "refused".
func connectCode(port string) string {
	return `
import socket
s = socket.socket()
s.settimeout(2)
try:
    s.connect(("127.0.0.1", ` + port + `))
    print("connected")
except OSError:
    print("refused")
`
}

// TestSandboxNetworkOnRequest: a kernel has no network unless its session
// asks for one; then it has the host's (it reaches a port on the host's
// loopback).
func TestSandboxNetworkOnRequest(t *testing.T) {
	needSandbox(t)
	t.Parallel()
	e := newEnv(t)
	a := e.start(agent.Config{DataDir: t.TempDir(), ID: "agent-net"})
	_, port, _ := strings.Cut(e.s.ClientURL(), "://127.0.0.1:")
	connect := connectCode(port)
	for _, tc := range []struct {
		network bool
		want    string
	}{{false, "refused\n"}, {true, "connected\n"}} {
		sp := spec(fmt.Sprintf("net-%v", tc.network))
		sp.Network = tc.network
		sp.Run = &events.RunSpec{ID: "r", Code: connect}
		e.schedule(a, sp)
		if o := e.waitExit(sp.ID, "r"); string(o.stdout) != tc.want {
			t.Errorf("network %v: stdout %q stderr %.300q, want %q", tc.network, o.stdout, o.stderr, tc.want)
		}
	}
}

// TestSandboxUnavailableSaysSo: an agent that cannot (here: may not)
// sandbox says so once at start, and runs its kernels as plain processes.
func TestSandboxUnavailableSaysSo(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	var log natstest.SyncBuffer
	dir := t.TempDir()
	a := e.start(agent.Config{DataDir: dir, ID: "agent-plain", Log: zerolog.New(&log), Sandbox: agent.SandboxOptions{Disable: true}})
	sp := spec("plain")
	sp.Run = &events.RunSpec{ID: "r", Exec: `pwd`}
	e.schedule(a, sp)
	if o := e.waitExit(sp.ID, "r"); string(o.stdout) != workDir(dir, sp.MainKernelID)+"\n" {
		t.Errorf("plain kernel runs in %q", o.stdout)
	}
	if n := strings.Count(log.String(), "sandbox disabled by configuration"); n != 1 {
		t.Errorf("said %d times, want once:\n%s", n, log.String())
	}
}

// TestDockerRuntimeBadOwner: a docker runtime needs a token owner.
func TestDockerRuntimeBadOwner(t *testing.T) {
	for _, owner := range []string{"", "a b", "a.b"} {
		if _, err := agent.NewDockerRuntime(t.Context(), agent.DockerOptions{Owner: owner}); !errors.Is(err, agent.ErrConfig) {
			t.Errorf("owner %q: %v, want ErrConfig", owner, err)
		}
	}
}

// TestSandboxExitLeavesNothing: when an execution's exit code is known,
// nothing it started runs any more, not even a process that left its
// process group and closed its output; with either helper.
func TestSandboxExitLeavesNothing(t *testing.T) {
	needSandbox(t)
	t.Parallel()
	for _, helper := range []string{"", buildHelper(t)} {
		r := agent.NewProcessRuntime(t.TempDir(), map[string]string{"python:": "/usr/bin/python3"})
		if notes := r.Sandbox(agent.SandboxOptions{Helper: helper}); len(notes) > 0 {
			t.Fatalf("notes %q", notes)
		}
		k := &events.SessionSpec{ID: "left", Image: testImage, MainKernelID: "k-left", Slots: map[string]string{"cpu": "1", "mem": "256m"}}
		if err := r.Create(t.Context(), k); err != nil {
			t.Fatal(err)
		}
		marker := "3" + strconv.Itoa(os.Getpid()%1000) + "7"
		p, err := r.Exec(t.Context(), k, events.RunSpec{ID: "r", Exec: `setsid sleep ` + marker + ` </dev/null >/dev/null 2>&1 & sleep ` + marker + ` & exit 3`})
		if err != nil {
			t.Fatal(err)
		}
		code, err := p.Wait()
		if err != nil || code != 3 {
			t.Errorf("helper %q: exit %d, %v; want 3", helper, code, err)
		}
		ents, _ := os.ReadDir("/proc")
		for _, e := range ents {
			cmd, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
			if err == nil && bytes.Equal(cmd, []byte("sleep\x00"+marker+"\x00")) {
				t.Errorf("helper %q: pid %s (sleep %s) still runs after the exit", helper, e.Name(), marker)
			}
		}
		p.Close()
		if err := r.Purge(t.Context()); err != nil {
			t.Errorf("purge: %v", err)
		}
	}
}
