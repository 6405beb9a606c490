package agent_test

import (
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bai-sh/bai/internal/natstest"
	"github.com/bai-sh/bai/pkg/events"
	"github.com/bai-sh/bai/pkg/events/streams"
	"github.com/bai-sh/bai/services/agent"
)

// agentProc is a bai-agent binary run as a real subprocess.
type agentProc struct {
	cmd *exec.Cmd
	log *natstest.SyncBuffer // its output, readable while it runs
}

// buildAgent builds the bai-agent binary once per test.
func buildAgent(t *testing.T) string {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skipf("SKIP: no go tool to build bai-agent: %v", err)
	}
	bin := filepath.Join(t.TempDir(), "bai-agent")
	out, err := exec.Command(goBin, "build", "-tags", "failpoint", "-o", bin, "./cmd/bai-agent").CombinedOutput()
	if err != nil {
		t.Fatalf("build bai-agent: %v\n%s", err, out)
	}
	return bin
}

// realAgentEnv is what a test of a real bai-agent process needs: its
// binary, a NATS server with the streams the agent would provision
// (before anything is published), and a data directory whose kernels are
// removed at the end.
func realAgentEnv(t *testing.T) (bin string, e *env, dir string) {
	t.Helper()
	bin = buildAgent(t)
	e = newEnv(t)
	if err := streams.Provision(t.Context(), e.js, streams.Options{}); err != nil {
		t.Fatal(err)
	}
	dir = t.TempDir()
	purgeKernels(t, dir)
	return bin, e, dir
}

func startAgentProc(t *testing.T, bin, url, dataDir string, env ...string) *agentProc {
	t.Helper()
	log := &natstest.SyncBuffer{}
	cmd := exec.Command(bin, "-nats", url, "-data-dir", dataDir, "-id", "agent-crash")
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	return &agentProc{cmd: cmd, log: log}
}

func (p *agentProc) kill9(t *testing.T) {
	t.Helper()
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	_ = p.cmd.Wait()
}

// TestCrashRecovery kills -9 a real bai-agent 10 times at random points
// while sessions are placed, created and run, restarting it each time.
// Then: every session is running or ended, never with its initial run done
// twice; the kernels the runtime has are exactly those the agent runs; and
// after a terminate each session is final and nothing is left behind.
func TestCrashRecovery(t *testing.T) {
	if testing.Short() {
		t.Skip("SKIP: builds and kills bai-agent (not in -short)")
	}
	t.Parallel()
	bin, e, dir := realAgentEnv(t)
	url := e.s.ClientURL()
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))

	var sessions []*events.SessionSpec
	early := map[string]bool{} // terminated during the rounds, maybe while starting
	schedule := func(sp *events.SessionSpec) {
		e.publish(&events.Event{Name: events.EventScheduled, AccessKey: sp.AccessKey, SessionID: sp.ID,
			KernelID: sp.MainKernelID, AgentID: "agent-crash", AgentEpoch: 1, Session: sp})
	}
	for round := 0; round < 10; round++ {
		p := startAgentProc(t, bin, url, dir)
		if round == 0 {
			// Work goes to an agent once its consumer exists (as the
			// scheduler places only on agents with a heartbeat).
			natstest.CheckFor(t, wait, step, func() error {
				_, err := e.js.Consumer(t.Context(), streams.Work, "bai-agent-agent-crash")
				return err
			})
		}
		for i := 0; i < 2; i++ {
			sp := spec(fmt.Sprintf("c%d-%d", round, i))
			// The initial run counts itself in the work dir, then stays.
			sp.Run = &events.RunSpec{ID: "init", Exec: `echo ran >> count; sleep 120`}
			sessions = append(sessions, sp)
			schedule(sp)
		}
		// Terminate one of the earlier sessions now and then.
		if round%3 == 2 {
			sp := sessions[rng.IntN(len(sessions)-2)]
			early[sp.ID] = true
			e.publish(&events.Event{Name: events.EventTerminating, AccessKey: sp.AccessKey, SessionID: sp.ID,
				KernelID: sp.MainKernelID, AgentID: "agent-crash", Reason: events.ReasonUserRequested})
		}
		time.Sleep(time.Duration(rng.IntN(400)) * time.Millisecond) // a random kill point, not a wait for a state
		p.kill9(t)
	}

	final := startAgentProc(t, bin, url, dir)
	t.Cleanup(func() {
		_ = final.cmd.Process.Signal(syscall.SIGTERM)
		_ = final.cmd.Wait()
		if t.Failed() {
			t.Logf("last agent's log:\n%s", final.log.String())
		}
	})
	// Every session gets to RUNNING or an end.
	for _, sp := range sessions {
		natstest.CheckFor(t, 60*time.Second, 50*time.Millisecond, func() error {
			evs := e.sessionEvents(sp.ID)
			if find(evs, events.EventStarted) == nil && find(evs, events.EventTerminated) == nil {
				return fmt.Errorf("session %s: %v", sp.ID, names(evs))
			}
			return nil
		})
	}
	// What the runtime has is what the agent runs: the sessions started
	// and not terminated.
	var running []string
	for _, sp := range sessions {
		if find(e.sessionEvents(sp.ID), events.EventTerminated) == nil {
			running = append(running, sp.MainKernelID)
		}
	}
	sort.Strings(running)
	t.Logf("after 10 kill -9s: %d of %d sessions running", len(running), len(sessions))
	r := agent.NewProcessRuntime(filepath.Join(dir, "kernels"), nil)
	r.Sandbox(agent.SandboxOptions{})
	natstest.CheckFor(t, wait, step, func() error {
		have, err := r.Kernels()
		if err != nil {
			return err
		}
		if fmt.Sprint(have) != fmt.Sprint(running) {
			return fmt.Errorf("runtime has kernels %v, sessions running %v", have, running)
		}
		return nil
	})
	// No initial run ran twice.
	for _, sp := range sessions {
		if find(e.sessionEvents(sp.ID), events.EventTerminated) != nil {
			continue
		}
		data, err := os.ReadFile(filepath.Join(dir, "kernels", sp.MainKernelID, "count"))
		if err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
		if n := strings.Count(string(data), "ran"); n > 1 {
			t.Errorf("session %s: initial run ran %d times", sp.ID, n)
		}
	}
	// Terminate all: each ends, and nothing is left.
	for _, sp := range sessions {
		e.publish(&events.Event{Name: events.EventTerminating, AccessKey: sp.AccessKey, SessionID: sp.ID,
			KernelID: sp.MainKernelID, AgentID: "agent-crash", Reason: events.ReasonUserRequested})
	}
	for _, sp := range sessions {
		evs := e.waitEvent(sp.ID, events.EventTerminated)
		// A session terminated while its kernel started may end without
		// one (the start is cancelled); any other had its kernel.
		if c := count(evs, events.EventKernelStarted); c < 1 && find(evs, events.EventError) == nil && !early[sp.ID] {
			t.Errorf("session %s ended without a kernel or an error: %v", sp.ID, names(evs))
		}
	}
	natstest.CheckFor(t, wait, step, func() error {
		have, err := r.Kernels()
		if err != nil {
			return err
		}
		if len(have) != 0 {
			return fmt.Errorf("kernels left after terminating all: %v", have)
		}
		return nil
	})
	t.Logf("%d sessions over 10 kill -9s: all final, runtime matches state", len(sessions))
}

// TestCrashAfterCreateBeforeRecord kills a real bai-agent (failpoint
// after-create) when the runtime has made the kernel but the agent has
// not recorded it: the restarted agent destroys that kernel, the
// placement comes again, and the session runs one kernel whose initial
// run ran once.
func TestCrashAfterCreateBeforeRecord(t *testing.T) {
	if testing.Short() {
		t.Skip("SKIP: builds and kills bai-agent (not in -short)")
	}
	t.Parallel()
	bin, e, dir := realAgentEnv(t)
	p := startAgentProc(t, bin, e.s.ClientURL(), dir, "BAI_AGENT_FAILPOINT=after-create")
	natstest.CheckFor(t, wait, step, func() error {
		_, err := e.js.Consumer(t.Context(), streams.Work, "bai-agent-agent-crash")
		return err
	})
	sp := spec("after-create")
	sp.Run = &events.RunSpec{ID: "init", Exec: `echo ran >> count; sleep 120`}
	e.publish(&events.Event{Name: events.EventScheduled, AccessKey: sp.AccessKey, SessionID: sp.ID,
		KernelID: sp.MainKernelID, AgentID: "agent-crash", AgentEpoch: 1, Session: sp})
	err := p.cmd.Wait()
	if ws, ok := p.cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("the agent did not stop at the failpoint: %v\n%s", err, p.log.String())
	}
	r := agent.NewProcessRuntime(filepath.Join(dir, "kernels"), nil)
	r.Sandbox(agent.SandboxOptions{})
	if have, err := r.Kernels(); err != nil || fmt.Sprint(have) != fmt.Sprint([]string{sp.MainKernelID}) {
		t.Fatalf("after the crash the runtime has %v (%v), want the unrecorded kernel", have, err)
	}

	final := startAgentProc(t, bin, e.s.ClientURL(), dir)
	t.Cleanup(func() {
		_ = final.cmd.Process.Signal(syscall.SIGTERM)
		_ = final.cmd.Wait()
		if t.Failed() {
			t.Logf("restarted agent's log:\n%s", final.log.String())
		}
	})
	count := filepath.Join(dir, "kernels", sp.MainKernelID, "count")
	natstest.CheckFor(t, 60*time.Second, 50*time.Millisecond, func() error {
		data, err := os.ReadFile(count)
		if err != nil {
			return err
		}
		if n := strings.Count(string(data), "ran"); n != 1 {
			return fmt.Errorf("initial run ran %d times", n)
		}
		return nil
	})
	if !strings.Contains(final.log.String(), "orphan_kernel_killed") {
		t.Errorf("the restarted agent did not destroy the unrecorded kernel:\n%s", final.log.String())
	}
	if have, err := r.Kernels(); err != nil || fmt.Sprint(have) != fmt.Sprint([]string{sp.MainKernelID}) {
		t.Fatalf("runtime has %v (%v), want one kernel", have, err)
	}
	if find(e.sessionEvents(sp.ID), events.EventStarted) == nil {
		t.Fatalf("session not started: %v", names(e.sessionEvents(sp.ID)))
	}
	e.publish(&events.Event{Name: events.EventTerminating, AccessKey: sp.AccessKey, SessionID: sp.ID,
		KernelID: sp.MainKernelID, AgentID: "agent-crash", Reason: events.ReasonUserRequested})
	e.waitEvent(sp.ID, events.EventTerminated)
	natstest.CheckFor(t, wait, step, func() error {
		if have, err := r.Kernels(); err != nil || len(have) != 0 {
			return fmt.Errorf("kernels left: %v %v", have, err)
		}
		return nil
	})
}
