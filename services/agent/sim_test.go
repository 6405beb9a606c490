package agent_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/bai-sh/bai/internal/natstest"
	"github.com/bai-sh/bai/pkg/events"
	"github.com/bai-sh/bai/pkg/events/streams"
	"github.com/bai-sh/bai/services/agent"
)

// TestSimLifecycle: a sim kernel goes through the real lifecycle, its runs
// exit with the configured code and no output, and it terminates.
func TestSimLifecycle(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	a := e.start(agent.Config{DataDir: t.TempDir(), ID: "agent-sim", Sim: &agent.SimConfig{ExitCode: 3}})
	sp := spec("s1")
	sp.Image = "anything:1" // the sim runtime runs every image
	sp.Run = &events.RunSpec{ID: "r1", Code: `print("not run")`}
	e.schedule(a, sp)

	o := e.waitExit(sp.ID, "r1")
	if o.exit != "3" || len(o.stdout) != 0 || len(o.stderr) != 0 {
		t.Fatalf("stdout %q stderr %q exit %q", o.stdout, o.stderr, o.exit)
	}
	evs := e.waitEvent(sp.ID, events.EventStarted)
	want := []events.Name{events.EventScheduled, events.EventPreparing, events.EventPrepared,
		events.EventCreating, events.EventKernelStarted, events.EventStarted}
	if got := names(evs); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("events %v, want %v", got, want)
	}
	e.execute(a, sp, events.RunSpec{ID: "r2", Exec: "true"})
	if o := e.waitExit(sp.ID, "r2"); o.exit != "3" {
		t.Fatalf("r2 exit %q", o.exit)
	}
	e.terminate(a, sp, events.ReasonUserRequested)
	evs = e.waitEvent(sp.ID, events.EventTerminated)
	if r := find(evs, events.EventTerminated).Reason; r != events.ReasonUserRequested {
		t.Errorf("terminated reason %q", r)
	}
}

// TestSimTerminateKillsRun: terminating a kernel kills its long run (137).
func TestSimTerminateKillsRun(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	a := e.start(agent.Config{DataDir: t.TempDir(), ID: "agent-sim", Sim: &agent.SimConfig{ExecDelay: time.Hour}})
	sp := spec("s1")
	sp.Run = &events.RunSpec{ID: "r1", Code: "x"}
	e.schedule(a, sp)
	e.waitEvent(sp.ID, events.EventStarted)
	e.terminate(a, sp, events.ReasonUserRequested)
	if o := e.waitExit(sp.ID, "r1"); o.exit != "137" {
		t.Fatalf("exit %q, want 137", o.exit)
	}
	e.waitEvent(sp.ID, events.EventTerminated)
}

// TestSimFailImage: an image the sim refuses fails to start.
func TestSimFailImage(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	a := e.start(agent.Config{DataDir: t.TempDir(), ID: "agent-sim", Sim: &agent.SimConfig{FailImagePrefix: "bad:"}})
	sp := spec("s1")
	sp.Image = "bad:1"
	e.schedule(a, sp)
	evs := e.waitEvent(sp.ID, events.EventTerminated)
	want := []events.Name{events.EventScheduled, events.EventPreparing, events.EventFailure,
		events.EventError, events.EventTerminated}
	if got := names(evs); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("events %v, want %v", got, want)
	}
}

// TestSlowStartHoldsNoOtherBack: a kernel whose image is still being
// prepared (a pull, held here until the test lets it go) holds back none
// of the agent's other starts, executions or terminations, nor does its
// placement handed again meanwhile; a run of the slow kernel, asked while
// it starts, runs once it has started, and the kernel starts once.
func TestSlowStartHoldsNoOtherBack(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	a, gate := e.startSlowAgent(0)
	slow := spec("slow")
	slow.Image = "slow:1"
	e.schedule(a, slow)
	e.waitEvent(slow.ID, events.EventPreparing)
	e.schedule(a, slow) // handed again while its start is under way
	for i := range 5 {
		sp := spec(fmt.Sprintf("fast%d", i))
		sp.Run = &events.RunSpec{ID: "r1", Code: "x"}
		e.schedule(a, sp)
	}
	for i := range 5 {
		sid := fmt.Sprintf("fast%d", i)
		e.waitEvent(sid, events.EventStarted)
		if o := e.waitExit(sid, "r1"); o.exit != "0" {
			t.Fatalf("%s: exit %q", sid, o.exit)
		}
	}
	fast1 := spec("fast1")
	e.execute(a, fast1, events.RunSpec{ID: "r2", Code: "x"})
	if o := e.waitExit(fast1.ID, "r2"); o.exit != "0" {
		t.Fatalf("fast1 r2: exit %q", o.exit)
	}
	e.terminate(a, fast1, events.ReasonUserRequested)
	e.waitEvent(fast1.ID, events.EventTerminated)
	e.execute(a, slow, events.RunSpec{ID: "r1", Code: "x"})
	if find(e.sessionEvents(slow.ID), events.EventStarted) != nil {
		t.Fatal("the slow kernel started before its image was prepared")
	}
	close(gate)
	e.waitEvent(slow.ID, events.EventStarted)
	if o := e.waitExit(slow.ID, "r1"); o.exit != "0" {
		t.Fatalf("run of the slow kernel: exit %q", o.exit)
	}
	if c := count(e.sessionEvents(slow.ID), events.EventKernelStarted); c != 1 {
		t.Fatalf("%d kernel_started for one kernel placed twice", c)
	}
}

// TestTerminationCancelsASlowStart: the work about a kernel whose start
// is held (an image pull that does not end) waits off the agent's work
// loop, so the other kernels' work goes on; a termination cancels the
// start, which reports no failure, and ends the session at once; an
// execution asked before it is refused. A cancellation does the same
// without a report.
func TestTerminationCancelsASlowStart(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	a, _ := e.startSlowAgent(50 * time.Millisecond) // its gate never opens: the pull would not end
	slow, slow2 := spec("slow"), spec("slow2")
	slow.Image, slow2.Image = "slow:1", "slow:1"
	e.schedule(a, slow)
	e.schedule(a, slow2)
	e.waitEvent(slow.ID, events.EventPreparing)
	e.waitEvent(slow2.ID, events.EventPreparing)
	e.execute(a, slow, events.RunSpec{ID: "r1", Code: "x"})

	fast := spec("fast")
	fast.Run = &events.RunSpec{ID: "r1", Code: "x"}
	e.schedule(a, fast)
	if o := e.waitExit(fast.ID, "r1"); o.exit != "0" {
		t.Fatalf("fast r1: exit %q", o.exit)
	}
	e.execute(a, fast, events.RunSpec{ID: "r2", Code: "x"})
	if o := e.waitExit(fast.ID, "r2"); o.exit != "0" {
		t.Fatalf("fast r2: exit %q", o.exit)
	}

	e.terminate(a, slow, events.ReasonUserRequested)
	evs := e.waitEvent(slow.ID, events.EventTerminated)
	if r := find(evs, events.EventTerminated).Reason; r != events.ReasonUserRequested {
		t.Errorf("terminated with reason %q", r)
	}
	for _, n := range []events.Name{events.EventFailure, events.EventError, events.EventStarted} {
		if find(evs, n) != nil {
			t.Errorf("a cancelled start published %s: %v", n, names(evs))
		}
	}
	if o := e.waitExit(slow.ID, "r1"); o.exit == "0" {
		t.Errorf("the run asked while the kernel started ran (stdout %q)", o.stdout)
	}

	e.publish(&events.Event{Name: events.EventCancelled, AccessKey: slow2.AccessKey, SessionID: slow2.ID,
		KernelID: slow2.MainKernelID, AgentID: a.ID(), Reason: events.ReasonUserRequested})
	e.execute(a, slow2, events.RunSpec{ID: "r9", Code: "x"})
	if o := e.waitExit(slow2.ID, "r9"); o.exit == "0" || !strings.Contains(string(o.stderr), "ended") {
		t.Errorf("a run after the cancellation: exit %q, stderr %q", o.exit, o.stderr)
	}
	evs = e.sessionEvents(slow2.ID)
	for _, n := range []events.Name{events.EventFailure, events.EventError, events.EventStarted, events.EventTerminated} {
		if find(evs, n) != nil {
			t.Errorf("a cancelled session's kernel published %s: %v", n, names(evs))
		}
	}
}

// TestStartsPastTheLimitHoldNothingBack: starts past the agent's slots
// (16 at once, 8 of one access key) wait for a slot without holding the
// work loop: one key's held starts leave slots to another key, an
// execution in a running kernel runs, a waiting kernel's termination ends
// it without a start, and the slot a cancelled start frees goes to the
// next one of its key waiting.
func TestStartsPastTheLimitHoldNothingBack(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	a, gate := e.startSlowAgent(20 * time.Millisecond)
	live := spec("live")
	e.schedule(a, live)
	e.waitEvent(live.ID, events.EventStarted)

	const perKey, n = 8, 10
	slowOf := func(ak string) []*events.SessionSpec {
		var out []*events.SessionSpec
		for i := range n {
			sp := spec(fmt.Sprintf("slow%d", i))
			sp.AccessKey, sp.Image, sp.MainKernelID = ak, "slow:1", "k-"+ak+"-"+sp.ID
			e.schedule(a, sp)
			out = append(out, sp)
		}
		return out
	}
	// under splits sessions into those whose start is under way and
	// those waiting for a slot, once exactly want are under way.
	under := func(sps []*events.SessionSpec, want int) (started, waiting []*events.SessionSpec) {
		t.Helper()
		natstest.CheckFor(t, wait, 5*step, func() error {
			// One read of the whole log a check (a consumer each).
			preparing := map[string]bool{}
			for _, m := range e.fetchAll(streams.Sessions, "bai.session.>") {
				var ev events.Event
				if err := json.Unmarshal(m.Data(), &ev); err != nil {
					return err
				}
				for _, x := range ev.Expand() {
					if x.Name == events.EventPreparing {
						preparing[x.AccessKey+"/"+x.SessionID] = true
					}
				}
			}
			started, waiting = nil, nil
			for _, sp := range sps {
				if preparing[sp.AccessKey+"/"+sp.ID] {
					started = append(started, sp)
				} else {
					waiting = append(waiting, sp)
				}
			}
			if len(started) != want {
				return fmt.Errorf("%d starts under way, want %d", len(started), want)
			}
			return nil
		})
		return started, waiting
	}

	mine := slowOf(testAK)
	under(mine, perKey)
	other := spec("other") // another key: a slot is left to it
	other.AccessKey = "AKOTHER"
	e.schedule(a, other)
	e.waitEventOf(other.AccessKey, other.ID, events.EventStarted)
	theirs := slowOf("AKOTHER")
	started, waiting := under(mine, perKey)
	under(theirs, perKey) // every slot taken now

	e.execute(a, live, events.RunSpec{ID: "r1", Code: "x"})
	if o := e.waitExit(live.ID, "r1"); o.exit != "0" {
		t.Fatalf("live r1: exit %q", o.exit)
	}
	e.terminate(a, waiting[0], events.ReasonUserRequested)
	evs := e.waitEvent(waiting[0].ID, events.EventTerminated)
	if find(evs, events.EventPreparing) != nil || find(evs, events.EventFailure) != nil {
		t.Errorf("a kernel terminated while it waited for a slot: %v", names(evs))
	}
	e.terminate(a, started[0], events.ReasonUserRequested)
	e.waitEvent(started[0].ID, events.EventTerminated)
	e.waitEvent(waiting[1].ID, events.EventPreparing) // the freed slot, to its key
	close(gate)
	for _, sp := range append(append(started[1:], waiting[1:]...), theirs...) {
		e.waitEventOf(sp.AccessKey, sp.ID, events.EventStarted)
	}
}

// TestQuickStartIsOneWrite: a start that is quick puts one event on the
// log, session_started with its four steps folded in, and the end one,
// session_terminated with kernel_terminated; a start slower than
// FoldStarts puts its steps on the log as they come, the first ones as
// soon as it is slow.
func TestQuickStartIsOneWrite(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	a, gate := e.startSlowAgent(100 * time.Millisecond)
	logNames := func(sid string) (ns []events.Name, steps [][]events.Name) {
		for _, ev := range e.sessionLog(sid) {
			ns = append(ns, ev.Name)
			var st []events.Name
			for _, s := range ev.Steps {
				st = append(st, s.Name)
			}
			steps = append(steps, st)
		}
		return ns, steps
	}

	quick := spec("quick")
	e.schedule(a, quick)
	e.waitEvent(quick.ID, events.EventStarted)
	e.terminate(a, quick, events.ReasonUserRequested)
	e.waitEvent(quick.ID, events.EventTerminated)
	ns, steps := logNames(quick.ID)
	want := []events.Name{events.EventScheduled, events.EventStarted, events.EventTerminating, events.EventTerminated}
	wantSteps := [][]events.Name{nil, {events.EventPreparing, events.EventPrepared, events.EventCreating,
		events.EventKernelStarted}, nil, {events.EventKernelExited}}
	if fmt.Sprint(ns) != fmt.Sprint(want) || fmt.Sprint(steps) != fmt.Sprint(wantSteps) {
		t.Fatalf("log %v with steps %v, want %v with %v", ns, steps, want, wantSteps)
	}

	slow := spec("slow")
	slow.Image = "slow:1"
	e.schedule(a, slow)
	e.waitEvent(slow.ID, events.EventPreparing) // past FoldStarts, while held
	close(gate)
	evs := e.waitEvent(slow.ID, events.EventStarted)
	if got, want := names(evs), []events.Name{events.EventScheduled, events.EventPreparing, events.EventPrepared,
		events.EventCreating, events.EventKernelStarted, events.EventStarted}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("slow start: %v, want %v", got, want)
	}
	if ns, steps := logNames(slow.ID); len(ns) != 6 || fmt.Sprint(steps) != "[[] [] [] [] [] []]" {
		t.Fatalf("slow start's log %v with steps %v: every step its own event", ns, steps)
	}
	for i := 1; i < len(evs); i++ {
		if evs[i].Time.Before(evs[i-1].Time) {
			t.Errorf("%s at %v before %s at %v", evs[i].Name, evs[i].Time, evs[i-1].Name, evs[i-1].Time)
		}
	}
}

// startSlowAgent starts a sim agent whose starts of "slow:" images wait
// until the returned gate is closed (a pull), and that folds the steps of
// the starts quicker than fold (0: the default).
func (e *env) startSlowAgent(fold time.Duration) (*runningAgent, chan struct{}) {
	gate := make(chan struct{})
	a := e.start(agent.Config{DataDir: e.t.TempDir(), ID: "agent-sim", FoldStarts: fold,
		Sim: &agent.SimConfig{SlowImagePrefix: "slow:", SlowGate: gate}})
	return a, gate
}

func TestSimRuntime(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	r := agent.NewSimRuntime(agent.SimConfig{ExitCode: 1})
	if r.Name() != "sim" {
		t.Errorf("name %q", r.Name())
	}
	k := spec("s1")
	if ok, err := r.Exists(ctx, k); ok || err != nil {
		t.Fatalf("exists before create: %v %v", ok, err)
	}
	if _, err := r.Exec(ctx, k, events.RunSpec{ID: "r1"}); err == nil {
		t.Fatal("exec in a missing kernel: no error")
	}
	bad := spec("s2")
	bad.MainKernelID = "a.b"
	if err := r.Create(ctx, bad); err == nil {
		t.Fatal("create with a bad kernel id: no error")
	}
	if r.Len() != 0 {
		t.Fatalf("len %d after a refused create", r.Len())
	}
	for range 2 { // idempotent
		if err := r.Create(ctx, k); err != nil {
			t.Fatal(err)
		}
	}
	if ok, _ := r.Exists(ctx, k); !ok || r.Len() != 1 {
		t.Fatalf("exists %v len %d", ok, r.Len())
	}
	p, err := r.Exec(ctx, k, events.RunSpec{ID: "r1"})
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := io.ReadAll(p.Stdout()); len(b) != 0 {
		t.Errorf("stdout %q", b)
	}
	if code, err := p.Wait(); code != 1 || err != nil {
		t.Errorf("wait: %d %v", code, err)
	}
	if err := p.Kill(); err != nil { // an ended run: nothing
		t.Error(err)
	}
	// A slow run killed exits 137.
	slow := agent.NewSimRuntime(agent.SimConfig{ExecDelay: time.Hour})
	if err := slow.Create(ctx, k); err != nil {
		t.Fatal(err)
	}
	p, err = slow.Exec(ctx, k, events.RunSpec{ID: "r2"})
	if err != nil {
		t.Fatal(err)
	}
	_ = p.Kill()
	_ = p.Kill()
	if code, _ := p.Wait(); code != 137 {
		t.Errorf("killed run exit %d", code)
	}
	// A delay honours the context.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := agent.NewSimRuntime(agent.SimConfig{PrepareDelay: time.Hour}).Prepare(cctx, k); !errors.Is(err, context.Canceled) {
		t.Errorf("prepare with a cancelled context: %v", err)
	}
	for range 2 {
		if err := r.Destroy(ctx, k); err != nil {
			t.Fatal(err)
		}
	}
	if ok, _ := r.Exists(ctx, k); ok {
		t.Fatal("exists after destroy")
	}
	if err := agent.NewSimRuntime(agent.SimConfig{FailImagePrefix: "x"}).Prepare(ctx, &events.SessionSpec{Image: "xy"}); !errors.Is(err, agent.ErrImage) {
		t.Errorf("refused image: %v", err)
	}
}
