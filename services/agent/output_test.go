package agent_test

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bai-sh/bai/internal/natstest"
	"github.com/bai-sh/bai/pkg/events"
)

// peakRSS is a process's peak resident set (VmHWM), in bytes.
func peakRSS(t *testing.T, pid int) int64 {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) == 3 && f[0] == "VmHWM:" {
			kb, err := strconv.ParseInt(f[1], 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb << 10
		}
	}
	t.Fatal("no VmHWM")
	return 0
}

// TestLargeOutput: 100 MB of random bytes from one run stream through a
// real bai-agent intact, in order, while the agent's peak memory grows by
// far less than the output.
func TestLargeOutput(t *testing.T) {
	if testing.Short() {
		t.Skip("SKIP: 100 MB through a real bai-agent (not in -short)")
	}
	t.Parallel()
	bin, e, dir := realAgentEnv(t)
	p := startAgentProc(t, bin, e.s.ClientURL(), dir)
	t.Cleanup(func() {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		_ = p.cmd.Wait()
	})
	sp := spec("big")
	schedule := func() {
		e.publish(&events.Event{Name: events.EventScheduled, AccessKey: sp.AccessKey, SessionID: sp.ID,
			KernelID: sp.MainKernelID, AgentID: "agent-crash", AgentEpoch: 1, Session: sp})
	}
	// The agent's consumer may not exist yet: placed again until started.
	natstest.CheckFor(t, wait, 500*time.Millisecond, func() error {
		if find(e.sessionEvents(sp.ID), events.EventStarted) == nil {
			schedule()
			return fmt.Errorf("not started")
		}
		return nil
	})
	before := peakRSS(t, p.cmd.Process.Pid)
	e.publish(&events.Event{Name: events.EventExecuteRequest, AccessKey: sp.AccessKey, SessionID: sp.ID,
		AgentID: "agent-crash", Run: &events.RunSpec{ID: "r1", Code: `
import hashlib, os, sys
h = hashlib.sha256()
for _ in range(100):
    b = os.urandom(1 << 20)
    h.update(b)
    sys.stdout.buffer.write(b)
sys.stdout.flush()
sys.stderr.write(h.hexdigest())
`}})
	var o output
	natstest.CheckFor(t, 120*time.Second, 100*time.Millisecond, func() error {
		// Wait on the exit alone: fetching 100 MB at each poll is slow.
		if o = e.output(sp.ID, "r1"); !o.exited {
			return fmt.Errorf("not exited")
		}
		return nil
	})
	after := peakRSS(t, p.cmd.Process.Pid)
	sum := sha256.Sum256(o.stdout)
	if o.exit != "0" || len(o.stdout) != 100<<20 || hex.EncodeToString(sum[:]) != string(o.stderr) {
		t.Fatalf("exit %s, %d bytes, sha256 %x, want 0, %d bytes, %s", o.exit, len(o.stdout), sum, 100<<20, o.stderr)
	}
	t.Logf("100 MB streamed in %d messages; agent peak RSS %d MiB before, %d MiB after", o.messages, before>>20, after>>20)
	if grow := after - before; grow > 48<<20 {
		t.Errorf("agent peak RSS grew by %d MiB for 100 MiB of output", grow>>20)
	}
}
