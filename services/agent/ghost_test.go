package agent_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/bai-sh/bai/internal/natstest"
	"github.com/bai-sh/bai/pkg/events"
	"github.com/bai-sh/bai/pkg/events/streams"
	"github.com/bai-sh/bai/services/agent"
)

// TestLostStateEndsGhostSessions runs sessions on a real bai-agent, kills
// it -9, deletes its state db and starts it again: it kills the kernels
// it has no record of as orphans and takes an epoch past its last
// heartbeat's. Then an execution in one of those sessions gets a clear
// error at once (stderr, exit 127) and ends the session (kernel-lost); a
// kernel_check ends the others the same way; a check of a session the
// new agent runs changes nothing.
func TestLostStateEndsGhostSessions(t *testing.T) {
	if testing.Short() {
		t.Skip("SKIP: builds and kills bai-agent (not in -short)")
	}
	t.Parallel()
	bin, e, dir := realAgentEnv(t)
	url := e.s.ClientURL()
	const agentID = "agent-crash"
	p := startAgentProc(t, bin, url, dir)
	natstest.CheckFor(t, wait, step, func() error {
		_, err := e.js.Consumer(t.Context(), streams.Work, "bai-agent-"+agentID)
		return err
	})
	var ghosts []*events.SessionSpec
	for i := range 4 {
		sp := spec(fmt.Sprintf("ghost-%d", i))
		sp.Run = &events.RunSpec{ID: "init", Exec: "sleep 120"}
		ghosts = append(ghosts, sp)
		e.publish(&events.Event{Name: events.EventScheduled, AccessKey: sp.AccessKey, SessionID: sp.ID,
			KernelID: sp.MainKernelID, AgentID: agentID, AgentEpoch: 1, Session: sp})
	}
	for _, sp := range ghosts {
		e.waitEvent(sp.ID, events.EventStarted)
	}
	// Every placement acknowledged: one that is not is handed again to
	// the restarted agent, which then starts its kernel afresh (the rule
	// for a kernel that never got its record), and that kernel is no ghost.
	natstest.CheckFor(t, wait, step, func() error {
		c, err := e.js.Consumer(t.Context(), streams.Work, "bai-agent-"+agentID)
		if err != nil {
			return err
		}
		ci, err := c.Info(t.Context())
		if err != nil {
			return err
		}
		if ci.NumAckPending != 0 || ci.NumPending != 0 {
			return fmt.Errorf("work not yet acknowledged: %d pending, %d unacknowledged", ci.NumPending, ci.NumAckPending)
		}
		return nil
	})
	if got := e.agentInfo(agentID).Epoch; got != 1 {
		t.Fatalf("first epoch %d, want 1", got)
	}
	p.kill9(t)
	if err := os.Remove(filepath.Join(dir, "agent.db")); err != nil {
		t.Fatal(err)
	}

	final := startAgentProc(t, bin, url, dir)
	t.Cleanup(func() {
		_ = final.cmd.Process.Signal(syscall.SIGTERM)
		_ = final.cmd.Wait()
		if t.Failed() {
			t.Logf("restarted agent's log:\n%s", final.log.String())
		}
	})
	// A new incarnation: an epoch past the last heartbeat's, though its
	// state db starts from nothing.
	natstest.CheckFor(t, wait, step, func() error {
		if got := e.agentInfo(agentID).Epoch; got != 2 {
			return fmt.Errorf("epoch %d after the state db was deleted, want 2", got)
		}
		return nil
	})
	r := agent.NewProcessRuntime(filepath.Join(dir, "kernels"), nil)
	r.Sandbox(agent.SandboxOptions{})
	if have, err := r.Kernels(); err != nil || len(have) != 0 {
		t.Fatalf("the restarted agent kept kernels it has no record of: %v %v", have, err)
	}

	// A session the new incarnation runs: its check changes nothing.
	kept := spec("kept")
	e.publish(&events.Event{Name: events.EventScheduled, AccessKey: kept.AccessKey, SessionID: kept.ID,
		KernelID: kept.MainKernelID, AgentID: agentID, AgentEpoch: 2, Session: kept})
	e.waitEvent(kept.ID, events.EventStarted)
	check := func(sp *events.SessionSpec) {
		e.publish(&events.Event{Name: events.EventKernelCheck, AccessKey: sp.AccessKey, SessionID: sp.ID,
			KernelID: sp.MainKernelID, AgentID: agentID, AgentEpoch: 2})
	}
	check(kept)

	// An execution in a ghost: a clear error at once, and the session ends.
	e.publish(&events.Event{Name: events.EventExecuteRequest, AccessKey: ghosts[0].AccessKey, SessionID: ghosts[0].ID,
		KernelID: ghosts[0].MainKernelID, AgentID: agentID, Run: &events.RunSpec{ID: "late", Code: "print(1)"}})
	o := e.waitExit(ghosts[0].ID, "late")
	if o.exit != "127" || !strings.Contains(string(o.stderr), "no record of kernel "+ghosts[0].MainKernelID) {
		t.Errorf("run in a lost kernel: exit %q, stderr %q", o.exit, o.stderr)
	}
	for _, sp := range ghosts[1:] {
		check(sp)
	}
	for _, sp := range ghosts {
		evs := e.waitEvent(sp.ID, events.EventTerminated)
		term := evs[len(evs)-1]
		if term.Name != events.EventTerminated || term.Reason != events.ReasonKernelLost || term.AgentEpoch != 2 ||
			!strings.Contains(term.Message, "no record of kernel") {
			t.Errorf("session %s ended with %s reason %q epoch %d message %q", sp.ID, term.Name, term.Reason, term.AgentEpoch, term.Message)
		}
		if c := count(evs, events.EventTerminated); c != 1 {
			t.Errorf("session %s: %d session_terminated", sp.ID, c)
		}
	}
	// A second check of a ghost, now gone: nothing more.
	check(ghosts[1])
	// The kept session was checked before the ghosts: still running.
	if evs := e.sessionEvents(kept.ID); find(evs, events.EventTerminated) != nil {
		t.Errorf("a kernel the agent runs was ended by a check: %v", names(evs))
	}
	if have, err := r.Kernels(); err != nil || fmt.Sprint(have) != fmt.Sprint([]string{kept.MainKernelID}) {
		t.Errorf("runtime has %v (%v), want only the kept kernel", have, err)
	}
	// An execution in a session whose kernel ended here: an error, at once.
	e.publish(&events.Event{Name: events.EventExecuteRequest, AccessKey: ghosts[1].AccessKey, SessionID: ghosts[1].ID,
		KernelID: ghosts[1].MainKernelID, AgentID: agentID, Run: &events.RunSpec{ID: "later", Code: "print(1)"}})
	if o := e.waitExit(ghosts[1].ID, "later"); o.exit != "127" || !strings.Contains(string(o.stderr), "has ended on agent") {
		t.Errorf("run in an ended session: exit %q, stderr %q", o.exit, o.stderr)
	}
	if c := count(e.sessionEvents(ghosts[1].ID), events.EventTerminated); c != 1 {
		t.Errorf("session %s: %d session_terminated after a second check and a run", ghosts[1].ID, c)
	}
}
