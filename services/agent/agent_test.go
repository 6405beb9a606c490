package agent_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"

	"github.com/bai-sh/bai/internal/natstest"
	"github.com/bai-sh/bai/pkg/events"
	"github.com/bai-sh/bai/pkg/events/streams"
	"github.com/bai-sh/bai/services/agent"
)

const (
	testAK    = "AKTEST"
	testImage = "python:3.11-debian12"
	wait      = 20 * time.Second
	step      = 20 * time.Millisecond
)

// env is one NATS server and a JetStream client.
type env struct {
	t  *testing.T
	s  *server.Server
	nc *nats.Conn
	js jetstream.JetStream
}

func newEnv(t *testing.T) *env {
	t.Helper()
	s := natstest.RunServer(t)
	nc := natstest.Connect(t, s)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return &env{t: t, s: s, nc: nc, js: js}
}

// runningAgent is an agent whose Run goroutine the test owns.
type runningAgent struct {
	*agent.Service
	stop func()
}

// start runs an agent over dataDir until stop (or the test's end).
func (e *env) start(cfg agent.Config) *runningAgent {
	e.t.Helper()
	if cfg.NC == nil {
		cfg.NC = e.nc
	}
	if cfg.HeartbeatInterval == 0 {
		cfg.HeartbeatInterval = 100 * time.Millisecond
	}
	svc, err := agent.New(cfg)
	if err != nil {
		e.t.Fatalf("new agent: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx) }()
	select {
	case <-svc.Ready():
	case err := <-done:
		cancel()
		e.t.Fatalf("agent run: %v", err)
	case <-time.After(wait):
		cancel()
		e.t.Fatal("agent not ready")
	}
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					e.t.Errorf("agent run: %v", err)
				}
			case <-time.After(wait):
				e.t.Error("agent did not stop")
			}
		})
	}
	e.t.Cleanup(stop)
	if cfg.Runtime == nil {
		purgeKernels(e.t, cfg.DataDir)
	}
	return &runningAgent{Service: svc, stop: stop}
}

// purgeKernels destroys, at the test's end, the kernels an agent over
// dataDir left (their cgroups and work dir mounts), after the agent stops.
func purgeKernels(t *testing.T, dataDir string) {
	t.Helper()
	t.Cleanup(func() {
		r := agent.NewProcessRuntime(filepath.Join(dataDir, "kernels"), nil)
		r.Sandbox(agent.SandboxOptions{})
		if err := r.Purge(context.Background()); err != nil {
			t.Errorf("purge kernels: %v", err)
		}
	})
}

// sandboxed reports whether the default process runtime contains its
// kernels on this host (root, namespaces); it says so when not.
func sandboxed(t *testing.T) bool {
	t.Helper()
	r := agent.NewProcessRuntime(t.TempDir(), nil)
	notes := r.Sandbox(agent.SandboxOptions{})
	if err := r.Purge(context.Background()); err != nil {
		t.Errorf("purge: %v", err)
	}
	if !r.Sandboxed() {
		t.Logf("process runtime not sandboxed here: %v", notes)
	}
	return r.Sandboxed()
}

func spec(sid string) *events.SessionSpec {
	return &events.SessionSpec{
		ID:             sid,
		Name:           "s-" + sid,
		AccessKey:      testAK,
		Image:          testImage,
		RequestedImage: "python",
		Type:           events.TypeInteractive,
		Slots:          map[string]string{"cpu": "1", "mem": "1g"},
		Domain:         "default",
		Group:          "default",
		ScalingGroup:   "default",
		MainKernelID:   "k-" + sid,
		CreatedAt:      time.Now().UTC(),
	}
}

// publish publishes an event as the scheduler or the gateway would, and
// returns its stream sequence.
func (e *env) publish(ev *events.Event) uint64 {
	e.t.Helper()
	ev.V = events.Version
	if ev.ID == "" {
		ev.ID = nuid.Next()
	}
	ev.Time = time.Now().UTC()
	subj, err := events.EventSubject(ev)
	if err != nil {
		e.t.Fatal(err)
	}
	data, err := json.Marshal(ev)
	if err != nil {
		e.t.Fatal(err)
	}
	ack, err := e.js.Publish(context.Background(), subj, data, jetstream.WithMsgID(ev.ID))
	if err != nil {
		e.t.Fatalf("publish %s: %v", ev.Name, err)
	}
	return ack.Sequence
}

func (e *env) schedule(a *runningAgent, sp *events.SessionSpec) uint64 {
	return e.publish(&events.Event{Name: events.EventScheduled, AccessKey: sp.AccessKey, SessionID: sp.ID,
		KernelID: sp.MainKernelID, AgentID: a.ID(), AgentEpoch: 1, Session: sp})
}

func (e *env) execute(a *runningAgent, sp *events.SessionSpec, run events.RunSpec) uint64 {
	return e.publish(&events.Event{Name: events.EventExecuteRequest, AccessKey: sp.AccessKey, SessionID: sp.ID,
		AgentID: a.ID(), Run: &run})
}

func (e *env) terminate(a *runningAgent, sp *events.SessionSpec, reason events.Reason) uint64 {
	return e.publish(&events.Event{Name: events.EventTerminating, AccessKey: sp.AccessKey, SessionID: sp.ID,
		KernelID: sp.MainKernelID, AgentID: a.ID(), Reason: reason})
}

// fetchAll reads every message of a stream on filter, in order.
func (e *env) fetchAll(stream, filter string) []jetstream.Msg {
	e.t.Helper()
	ctx := context.Background()
	c, err := e.js.OrderedConsumer(ctx, stream, jetstream.OrderedConsumerConfig{FilterSubjects: []string{filter}})
	if err != nil {
		e.t.Fatal(err)
	}
	var out []jetstream.Msg
	for {
		b, err := c.FetchNoWait(500)
		if err != nil {
			e.t.Fatal(err)
		}
		n := 0
		for m := range b.Messages() {
			out = append(out, m)
			n++
		}
		if err := b.Error(); err != nil {
			e.t.Fatal(err)
		}
		if n == 0 {
			return out
		}
	}
}

// sessionEvents is the session's log, a folded event as the events it
// stands for (Event.Expand), as every reader takes it.
func (e *env) sessionEvents(sid string) []events.Event {
	e.t.Helper()
	return e.sessionEventsOf(testAK, sid)
}

// sessionEventsOf is sessionEvents of a session of access key ak.
func (e *env) sessionEventsOf(ak, sid string) []events.Event {
	e.t.Helper()
	var evs []events.Event
	for _, ev := range e.sessionLogOf(ak, sid) {
		evs = append(evs, *ev)
	}
	return events.ExpandAll(evs)
}

// sessionLog is the session's log as stored.
func (e *env) sessionLog(sid string) []*events.Event {
	e.t.Helper()
	return e.sessionLogOf(testAK, sid)
}

// sessionLogOf is sessionLog of a session of access key ak.
func (e *env) sessionLogOf(ak, sid string) []*events.Event {
	e.t.Helper()
	filter, _ := events.SessionFilter(ak, sid)
	var evs []*events.Event
	for _, m := range e.fetchAll(streams.Sessions, filter) {
		var ev events.Event
		if err := json.Unmarshal(m.Data(), &ev); err != nil {
			e.t.Fatal(err)
		}
		evs = append(evs, &ev)
	}
	return evs
}

func names(evs []events.Event) []events.Name {
	var ns []events.Name
	for _, ev := range evs {
		ns = append(ns, ev.Name)
	}
	return ns
}

func count(evs []events.Event, n events.Name) int {
	c := 0
	for _, ev := range evs {
		if ev.Name == n {
			c++
		}
	}
	return c
}

func find(evs []events.Event, n events.Name) *events.Event {
	for i := range evs {
		if evs[i].Name == n {
			return &evs[i]
		}
	}
	return nil
}

// waitEvent waits until the session's log holds n and returns the log.
func (e *env) waitEvent(sid string, n events.Name) []events.Event {
	e.t.Helper()
	return e.waitEventOf(testAK, sid, n)
}

// waitEventOf is waitEvent of a session of access key ak.
func (e *env) waitEventOf(ak, sid string, n events.Name) []events.Event {
	e.t.Helper()
	var evs []events.Event
	natstest.CheckFor(e.t, wait, step, func() error {
		evs = e.sessionEventsOf(ak, sid)
		if find(evs, n) == nil {
			return fmt.Errorf("no %s in %v", n, names(evs))
		}
		return nil
	})
	return evs
}

// output is one run's output as published.
type output struct {
	stdout, stderr []byte
	exit           string
	exited         bool
	exitTime       time.Time
	messages       int
}

func (e *env) output(sid, runID string) output {
	e.t.Helper()
	subj, err := events.OutputSubject(testAK, sid, runID)
	if err != nil {
		e.t.Fatal(err)
	}
	var o output
	for _, m := range e.fetchAll(streams.Output, subj) {
		o.messages++
		switch m.Headers().Get(events.HeaderStream) {
		case events.StreamStdout:
			o.stdout = append(o.stdout, m.Data()...)
		case events.StreamStderr:
			o.stderr = append(o.stderr, m.Data()...)
		case events.StreamExit:
			if o.exited {
				e.t.Errorf("run %s: a second exit message", runID)
			}
			o.exit, o.exited = string(m.Data()), true
			md, err := m.Metadata()
			if err != nil {
				e.t.Fatal(err)
			}
			o.exitTime = md.Timestamp
		default:
			e.t.Errorf("run %s: message without a stream header: %v", runID, m.Headers())
		}
	}
	return o
}

// waitExit waits for the run's exit message and returns its output.
func (e *env) waitExit(sid, runID string) output {
	e.t.Helper()
	var o output
	natstest.CheckFor(e.t, wait, step, func() error {
		o = e.output(sid, runID)
		if !o.exited {
			return fmt.Errorf("run %s not exited; stdout %q stderr %q", runID, o.stdout, o.stderr)
		}
		return nil
	})
	return o
}

// waitAcked waits until the agent acknowledged its work up to seq, a
// sequence of the session log: first until the server copied that work into
// the work queue, then until the agent's consumer acknowledged the copy.
func (e *env) waitAcked(a *runningAgent, seq uint64) {
	e.t.Helper()
	ctx := context.Background()
	queue, _ := events.AgentQueueSubject(a.ID())
	var workSeq uint64
	natstest.CheckFor(e.t, wait, step, func() error {
		w, err := e.js.Stream(ctx, streams.Work)
		if err != nil {
			return err
		}
		m, err := w.GetLastMsgForSubject(ctx, queue)
		if err != nil {
			return err
		}
		f := strings.Fields(m.Header.Get(events.WorkSourceHeader))
		if len(f) < 2 || f[1] != strconv.FormatUint(seq, 10) {
			return fmt.Errorf("last work copied is %v, want log seq %d", f, seq)
		}
		workSeq = m.Sequence
		return nil
	})
	natstest.CheckFor(e.t, wait, step, func() error {
		c, err := e.js.Consumer(ctx, streams.Work, "bai-agent-"+a.ID())
		if err != nil {
			return err
		}
		info, err := c.Info(ctx)
		if err != nil {
			return err
		}
		if info.AckFloor.Stream < workSeq {
			return fmt.Errorf("ack floor %d < %d", info.AckFloor.Stream, workSeq)
		}
		return nil
	})
}

func workDir(dataDir, kernelID string) string {
	return filepath.Join(dataDir, "kernels", kernelID)
}

func TestRunHelloWorld(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	a := e.start(agent.Config{DataDir: t.TempDir(), ID: "agent-1"})
	sp := spec("s1")
	sp.Run = &events.RunSpec{ID: "r1", Code: `print("hello world")`}
	e.schedule(a, sp)

	o := e.waitExit(sp.ID, "r1")
	if string(o.stdout) != "hello world\n" || o.exit != "0" || len(o.stderr) != 0 {
		t.Fatalf("stdout %q stderr %q exit %q", o.stdout, o.stderr, o.exit)
	}
	evs := e.waitEvent(sp.ID, events.EventStarted)
	want := []events.Name{events.EventScheduled, events.EventPreparing, events.EventPrepared,
		events.EventCreating, events.EventKernelStarted, events.EventStarted}
	if got := names(evs); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("events %v, want %v", got, want)
	}
	for _, ev := range evs[1:] {
		if ev.AgentID != "agent-1" || ev.AgentEpoch != 1 || ev.KernelID != sp.MainKernelID || ev.ID == "" {
			t.Errorf("%s: agent %q epoch %d kernel %q id %q", ev.Name, ev.AgentID, ev.AgentEpoch, ev.KernelID, ev.ID)
		}
	}
}

func TestExecuteOutput(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	dir := t.TempDir()
	a := e.start(agent.Config{DataDir: dir, ID: "agent-1"})
	sp := spec("s1")
	home, tmp := workDir(dir, sp.MainKernelID), workDir(dir, sp.MainKernelID)
	// The image's bin dir first (see TestImageAnswersPython): made by the
	// first execution where the kernel is a plain process.
	execPath := agent.KernelBinDir + ":/usr/local/bin:/usr/bin:/bin"
	isSandboxed := sandboxed(t)
	if isSandboxed {
		home, tmp = agent.KernelWorkDir, "/tmp"
	}
	sp.Env = map[string]string{"GREETING": "hi"}
	e.schedule(a, sp)
	e.waitEvent(sp.ID, events.EventStarted)

	big := bytes.Repeat(func() []byte {
		b := make([]byte, 256)
		for i := range b {
			b[i] = byte(i)
		}
		return b
	}(), 1000)
	tests := []struct {
		name       string
		run        events.RunSpec
		stdout     []byte
		stderrHas  string
		exit       string
		minChunked int
	}{
		{name: "traceback", run: events.RunSpec{Code: `print(1/0)`}, stderrHas: "ZeroDivisionError", exit: "1"},
		{name: "exec", run: events.RunSpec{Exec: `echo "$GREETING $HOME"; pwd; echo err >&2; exit 3`},
			stdout: []byte("hi " + home + "\n" + home + "\n"), stderrHas: "err", exit: "3"},
		{name: "binary", run: events.RunSpec{Code: `import sys; sys.stdout.buffer.write(bytes(range(256))*1000)`},
			stdout: big, exit: "0", minChunked: len(big) / (32 << 10)},
		{name: "env-allowlist", run: events.RunSpec{Exec: `env | grep -Ev '^(PWD|SHLVL|_|OLDPWD)=' | sort`},
			stdout: []byte("GREETING=hi\nHOME=" + home + "\nLANG=C.UTF-8\nPATH=" + execPath + "\nPYTHONUNBUFFERED=1\nTMPDIR=" + tmp + "\n"), exit: "0"},
		{name: "signal", run: events.RunSpec{Exec: `kill -9 $$`}, exit: "137"},
		{name: "long-code", run: events.RunSpec{Code: "x = 1\n" + strings.Repeat("# filler\n", 20000) + "print(x)"}, stdout: []byte("1\n"), exit: "0"},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.run.ID = "r" + strconv.Itoa(i)
			if bins, _ := filepath.Glob(filepath.Join(dir, "bin", "*")); !isSandboxed && len(bins) == 1 {
				tc.stdout = bytes.Replace(tc.stdout, []byte("PATH="+agent.KernelBinDir), []byte("PATH="+bins[0]), 1)
			}
			e.execute(a, sp, tc.run)
			o := e.waitExit(sp.ID, tc.run.ID)
			if o.exit != tc.exit {
				t.Errorf("exit %q, want %q (stderr %q)", o.exit, tc.exit, o.stderr)
			}
			if tc.stdout != nil && !bytes.Equal(o.stdout, tc.stdout) {
				if len(o.stdout) > 300 {
					t.Errorf("stdout: %d bytes, want %d", len(o.stdout), len(tc.stdout))
				} else {
					t.Errorf("stdout %q, want %q", o.stdout, tc.stdout)
				}
			}
			if !strings.Contains(string(o.stderr), tc.stderrHas) {
				t.Errorf("stderr %q, want it to contain %q", o.stderr, tc.stderrHas)
			}
			if o.messages < tc.minChunked {
				t.Errorf("%d messages, want at least %d", o.messages, tc.minChunked)
			}
		})
	}
}

func TestDuplicateScheduled(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	a := e.start(agent.Config{DataDir: t.TempDir(), ID: "agent-1"})
	sp := spec("s1")
	sp.Run = &events.RunSpec{ID: "r1", Code: `print("once")`}
	e.schedule(a, sp)
	e.schedule(a, sp) // a scheduler's retry under a new event id
	e.waitExit(sp.ID, "r1")
	// The same run asked again is not run again either.
	seq := e.execute(a, sp, *sp.Run)
	e.waitAcked(a, seq)

	evs := e.sessionEvents(sp.ID)
	for _, n := range []events.Name{events.EventPreparing, events.EventKernelStarted, events.EventStarted} {
		if c := count(evs, n); c != 1 {
			t.Errorf("%d %s events, want 1: %v", c, n, names(evs))
		}
	}
	if o := e.output(sp.ID, "r1"); string(o.stdout) != "once\n" {
		t.Errorf("stdout %q, want one run", o.stdout)
	}
}

func TestTerminateKillsProcessGroup(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	dir := t.TempDir()
	a := e.start(agent.Config{DataDir: dir, ID: "agent-1"})
	sp := spec("s1")
	e.schedule(a, sp)
	e.waitEvent(sp.ID, events.EventStarted)
	// Marked sleeps, found by their command line on the host whatever
	// pid namespace they are in; one left in the background, one in its
	// own session.
	mark := strconv.FormatInt(time.Now().UnixNano()%1e9, 10)
	e.execute(a, sp, events.RunSpec{ID: "long", Exec: `sleep 600.` + mark + ` & setsid sleep 601.` + mark + ` & echo started; sleep 602.` + mark})

	var pids []int
	natstest.CheckFor(t, wait, step, func() error {
		pids = markedPids(mark)
		if len(pids) != 3 {
			return fmt.Errorf("%d marked processes", len(pids))
		}
		return nil
	})
	for _, pid := range pids {
		if !alive(pid) {
			t.Fatalf("pid %d not running before terminate", pid)
		}
	}
	e.terminate(a, sp, "")

	evs := e.waitEvent(sp.ID, events.EventTerminated)
	term := find(evs, events.EventTerminated)
	if term.Reason != events.ReasonUserRequested {
		t.Errorf("reason %q, want %q", term.Reason, events.ReasonUserRequested)
	}
	if find(evs, events.EventKernelExited) == nil {
		t.Errorf("no kernel_terminated in %v", names(evs))
	}
	o := e.output(sp.ID, "long")
	if !o.exited || o.exit != "137" {
		t.Fatalf("exit %q (exited %v), want 137", o.exit, o.exited)
	}
	md := e.lastMeta(sp.ID, events.EventTerminated)
	if o.exitTime.After(md.Timestamp) {
		t.Errorf("exit published at %v, after session_terminated at %v", o.exitTime, md.Timestamp)
	}
	for _, pid := range pids {
		if alive(pid) {
			t.Errorf("pid %d still alive after terminate", pid)
		}
	}
	if _, err := os.Stat(workDir(dir, sp.MainKernelID)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("work dir still there: %v", err)
	}
	// The kernel is gone: a redelivered placement does not bring it back.
	seq := e.schedule(a, sp)
	e.waitAcked(a, seq)
	if c := count(e.sessionEvents(sp.ID), events.EventKernelStarted); c != 1 {
		t.Errorf("%d kernel_started after a late duplicate placement, want 1", c)
	}
}

// lastMeta is the stream metadata of the session's last event named n.
func (e *env) lastMeta(sid string, n events.Name) *jetstream.MsgMetadata {
	e.t.Helper()
	filter, _ := events.SessionFilter(testAK, sid)
	var md *jetstream.MsgMetadata
	for _, m := range e.fetchAll(streams.Sessions, filter) {
		if strings.HasSuffix(m.Subject(), "."+string(n)) {
			var err error
			if md, err = m.Metadata(); err != nil {
				e.t.Fatal(err)
			}
		}
	}
	if md == nil {
		e.t.Fatalf("no %s", n)
	}
	return md
}

// alive reports whether pid is a process that is not a zombie.
// markedPids are the host pids of the processes "sleep 60x.<mark>".
func markedPids(mark string) []int {
	ents, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmd, _ := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if f := strings.Split(string(cmd), "\x00"); len(f) >= 2 && f[0] == "sleep" && strings.HasSuffix(f[1], "."+mark) && alive(pid) {
			pids = append(pids, pid)
		}
	}
	return pids
}

func alive(pid int) bool {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// pid (comm) state ...: comm may hold spaces; the state follows the last ')'.
	s := string(data)
	i := strings.LastIndexByte(s, ')')
	if i < 0 || i+2 >= len(s) {
		return false
	}
	return s[i+2] != 'Z' && s[i+2] != 'X'
}

func TestUnknownImage(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	dir := t.TempDir()
	a := e.start(agent.Config{DataDir: dir, ID: "agent-1"})
	sp := spec("s1")
	sp.Image = "ruby:3.3-debian12"
	sp.Run = &events.RunSpec{ID: "r1", Code: `puts 1`}
	e.schedule(a, sp)

	evs := e.waitEvent(sp.ID, events.EventTerminated)
	want := []events.Name{events.EventScheduled, events.EventPreparing, events.EventFailure,
		events.EventError, events.EventTerminated}
	if got := names(evs); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("events %v, want %v", got, want)
	}
	fail := find(evs, events.EventFailure)
	if fail.Reason != events.ReasonFailedToStart || !strings.Contains(fail.Message, sp.Image) {
		t.Errorf("failure reason %q message %q", fail.Reason, fail.Message)
	}
	if r := find(evs, events.EventTerminated).Reason; r != events.ReasonFailedToStart {
		t.Errorf("terminated reason %q", r)
	}
	if _, err := os.Stat(workDir(dir, sp.MainKernelID)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("work dir made: %v", err)
	}
}

func TestBatch(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	a := e.start(agent.Config{DataDir: t.TempDir(), ID: "agent-1"})
	tests := []struct {
		name, cmd, exit string
		result          events.Name
	}{
		{"success", "echo done", "0", events.EventSuccess},
		{"failure", "echo failing; exit 3", "3", events.EventFailure},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			sp := spec("batch-" + tc.name)
			sp.Type = events.TypeBatch
			sp.StartupCommand = tc.cmd
			e.schedule(a, sp)
			evs := e.waitEvent(sp.ID, events.EventTerminated)
			want := []events.Name{events.EventScheduled, events.EventPreparing, events.EventPrepared,
				events.EventCreating, events.EventKernelStarted, events.EventStarted, tc.result,
				events.EventKernelExited, events.EventTerminated}
			if got := names(evs); fmt.Sprint(got) != fmt.Sprint(want) {
				t.Fatalf("events %v, want %v", got, want)
			}
			res := find(evs, tc.result)
			if res.ExitCode == nil || strconv.Itoa(*res.ExitCode) != tc.exit {
				t.Errorf("exit code %v, want %s", res.ExitCode, tc.exit)
			}
			if r := find(evs, events.EventTerminated).Reason; r != events.ReasonTaskFinished {
				t.Errorf("reason %q", r)
			}
			if o := e.output(sp.ID, events.StartupRunID); o.exit != tc.exit {
				t.Errorf("output exit %q", o.exit)
			}
		})
	}
}

func TestCancelled(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	dir := t.TempDir()
	a := e.start(agent.Config{DataDir: dir, ID: "agent-1"})
	sp := spec("s1")
	e.schedule(a, sp)
	e.waitEvent(sp.ID, events.EventStarted)
	seq := e.publish(&events.Event{Name: events.EventCancelled, AccessKey: testAK, SessionID: sp.ID,
		AgentID: a.ID(), Reason: events.ReasonUserRequested})
	e.waitAcked(a, seq)
	if _, err := os.Stat(workDir(dir, sp.MainKernelID)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("work dir still there: %v", err)
	}
	evs := e.sessionEvents(sp.ID)
	if n := evs[len(evs)-1].Name; n != events.EventCancelled {
		t.Errorf("agent published after the cancel: %v", names(evs))
	}
	// Execution in the cancelled session is refused at once, saying why:
	// whoever follows it is not left waiting.
	e.execute(a, sp, events.RunSpec{ID: "r1", Code: "print(1)"})
	if o := e.waitExit(sp.ID, "r1"); o.exit != "127" || len(o.stdout) != 0 || !strings.Contains(string(o.stderr), "has ended on agent agent-1") {
		t.Errorf("run in a cancelled session: exit %q, stdout %q, stderr %q", o.exit, o.stdout, o.stderr)
	}
}

func TestHeartbeat(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	a := e.start(agent.Config{DataDir: t.TempDir()})
	if !strings.HasPrefix(a.ID(), "agent-") || !events.ValidToken(a.ID()) {
		t.Fatalf("default id %q", a.ID())
	}
	kv, err := e.js.KeyValue(context.Background(), streams.Agents)
	if err != nil {
		t.Fatal(err)
	}
	var first time.Time
	natstest.CheckFor(t, wait, step, func() error {
		ent, err := kv.Get(context.Background(), a.ID())
		if err != nil {
			return err
		}
		var info events.AgentInfo
		if err := json.Unmarshal(ent.Value(), &info); err != nil {
			return err
		}
		if info.V != 1 || info.ID != a.ID() || info.Epoch != 1 || info.Runtime != "process" ||
			info.ScalingGroup != "default" || info.Capacity["cpu"] == "" || info.Capacity["mem"] == "" {
			return fmt.Errorf("heartbeat %+v", info)
		}
		if first.IsZero() {
			first = info.Heartbeat
		}
		if !info.Heartbeat.After(first) {
			return errors.New("heartbeat not renewed")
		}
		return nil
	})
	a.stop()
	if _, err := kv.Get(context.Background(), a.ID()); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Errorf("heartbeat after stop: %v", err)
	}
}

func TestRestart(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	dir := t.TempDir()
	a := e.start(agent.Config{DataDir: dir, ID: "agent-r", Capacity: map[string]string{"cpu": "2", "mem": "4g"}})
	kept, lost := spec("kept"), spec("lost")
	kept.Run = &events.RunSpec{ID: "r1", Code: `open("state.txt", "w").write("kept")`}
	e.schedule(a, kept)
	e.schedule(a, lost)
	e.waitExit(kept.ID, "r1")
	e.waitEvent(lost.ID, events.EventStarted)
	// A long execution is killed by the shutdown, and its exit published.
	e.execute(a, kept, events.RunSpec{ID: "long", Exec: "echo started; sleep 60"})
	natstest.CheckFor(t, wait, step, func() error {
		if o := e.output(kept.ID, "long"); string(o.stdout) != "started\n" {
			return fmt.Errorf("long run stdout %q", o.stdout)
		}
		return nil
	})
	a.stop()
	if o := e.output(kept.ID, "long"); o.exit != "137" {
		t.Errorf("long run exit %q after shutdown, want 137", o.exit)
	}
	// A mounted work dir (the sandbox's size limit) goes first.
	_ = syscall.Unmount(workDir(dir, lost.MainKernelID), syscall.MNT_DETACH)
	if err := os.RemoveAll(workDir(dir, lost.MainKernelID)); err != nil {
		t.Fatal(err)
	}

	b := e.start(agent.Config{DataDir: dir, Capacity: map[string]string{"cpu": "2", "mem": "4g"}})
	if b.ID() != "agent-r" {
		t.Fatalf("restarted id %q, want the stored agent-r", b.ID())
	}
	evs := e.waitEvent(lost.ID, events.EventTerminated)
	if term := find(evs, events.EventTerminated); term.Reason != events.ReasonAgentRestarted || term.AgentEpoch != 2 {
		t.Errorf("lost kernel: reason %q epoch %d", term.Reason, term.AgentEpoch)
	}
	if find(evs, events.EventKernelExited) == nil {
		t.Errorf("no kernel_terminated for the lost kernel: %v", names(evs))
	}

	e.execute(b, kept, events.RunSpec{ID: "r2", Code: `print(open("state.txt").read())`})
	o := e.waitExit(kept.ID, "r2")
	if string(o.stdout) != "kept\n" || o.exit != "0" {
		t.Errorf("after restart: stdout %q stderr %q exit %q", o.stdout, o.stderr, o.exit)
	}
	if c := count(e.sessionEvents(kept.ID), events.EventTerminated); c != 0 {
		t.Errorf("adopted kernel terminated")
	}
	e.terminate(b, kept, events.ReasonIdleTimeout)
	evs = e.waitEvent(kept.ID, events.EventTerminated)
	if term := find(evs, events.EventTerminated); term.Reason != events.ReasonIdleTimeout || term.AgentEpoch != 2 {
		t.Errorf("kept kernel: reason %q epoch %d", term.Reason, term.AgentEpoch)
	}
}

// TestRestartAfterReboot: a reboot takes every kernel's tmpfs and the
// kernels' root with them. The next start finds the kernel gone and ends
// its session (agent_restarted), rather than adopting a directory with
// none of its files.
func TestRestartAfterReboot(t *testing.T) {
	needSandbox(t)
	t.Parallel()
	e := newEnv(t)
	dir := t.TempDir()
	a := e.start(agent.Config{DataDir: dir, ID: "agent-rb", Capacity: map[string]string{"cpu": "2", "mem": "4g"}})
	k := spec("rebooted")
	k.Run = &events.RunSpec{ID: "r1", Code: `open("state.txt", "w").write("lost")`}
	e.schedule(a, k)
	e.waitExit(k.ID, "r1")
	a.stop() // a clean stop keeps the kernel, for the next start
	root := filepath.Dir(workDir(dir, k.MainKernelID))
	if err := syscall.Unmount(root, syscall.MNT_DETACH); err != nil {
		t.Fatalf("the kernels' root is not a mount after a stop with a kernel: %v", err)
	}
	if _, err := os.Stat(workDir(dir, k.MainKernelID)); !os.IsNotExist(err) {
		t.Fatalf("the kernel's directory after the reboot: %v, want none", err)
	}
	e.start(agent.Config{DataDir: dir, Capacity: map[string]string{"cpu": "2", "mem": "4g"}})
	evs := e.waitEvent(k.ID, events.EventTerminated)
	if term := find(evs, events.EventTerminated); term.Reason != events.ReasonAgentRestarted || term.AgentEpoch != 2 {
		t.Errorf("after the reboot: reason %q epoch %d", term.Reason, term.AgentEpoch)
	}
}

func TestNew(t *testing.T) {
	nc := &nats.Conn{}
	tests := []struct {
		name string
		cfg  agent.Config
		ok   bool
	}{
		{"ok", agent.Config{NC: nc, DataDir: t.TempDir()}, true},
		{"no-nc", agent.Config{DataDir: t.TempDir()}, false},
		{"no-data-dir", agent.Config{NC: nc}, false},
		{"bad-id", agent.Config{NC: nc, DataDir: t.TempDir(), ID: "a.b"}, false},
		{"bad-group", agent.Config{NC: nc, DataDir: t.TempDir(), ScalingGroup: "g*"}, false},
		{"bad-capacity", agent.Config{NC: nc, DataDir: t.TempDir(), Capacity: map[string]string{"cpu": "-1"}}, false},
		{"work-heartbeat-too-short", agent.Config{NC: nc, DataDir: t.TempDir(), WorkHeartbeat: time.Millisecond}, false},
		{"work-heartbeat-too-long", agent.Config{NC: nc, DataDir: t.TempDir(), WorkHeartbeat: time.Hour}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := agent.New(tc.cfg)
			if tc.ok && err != nil {
				t.Fatal(err)
			}
			if !tc.ok && !errors.Is(err, agent.ErrConfig) {
				t.Fatalf("err %v, want ErrConfig", err)
			}
		})
	}
}

func TestProcessRuntimeInterpreter(t *testing.T) {
	r := agent.NewProcessRuntime(t.TempDir(), map[string]string{"python:": "/a", "python:3.12": "/b"})
	for image, want := range map[string]string{"python:3.11-debian12": "/a", "python:3.12-x": "/b"} {
		if got, err := r.Interpreter(image); err != nil || got != want {
			t.Errorf("%s: %q %v, want %q", image, got, err, want)
		}
	}
	if _, err := r.Interpreter("ruby:3"); !errors.Is(err, agent.ErrImage) {
		t.Errorf("ruby: %v, want ErrImage", err)
	}
}

// TestNATSRestartForgetsConsumer: the work consumer lives in the NATS
// server's memory, so a NATS restart forgets it; the agent makes it again
// from its own cursor. Work placed while the agent and its consumer were
// both gone is handled, work handled before is not handled again, a
// running agent picks up work placed after the restart, and after a
// restart that lost the NATS store (a new work queue, counting from 1).
// TestHeartbeatAtOnceAfterReconnect: an agent whose connection comes
// back (to the same server here; to another node where its own stopped
// answering) stores its heartbeat at once, not a tick later: its silence
// is the time the connection was away.
func TestHeartbeatAtOnceAfterReconnect(t *testing.T) {
	t.Parallel()
	opts := natstest.Options(t.TempDir())
	e := &env{t: t, s: natstest.RunServerWithOptions(t, opts)}
	e.connect()
	cfg := agent.Config{DataDir: t.TempDir(), ID: "agent-hb", HeartbeatInterval: time.Hour,
		NC: natstest.Connect(t, e.s, nats.MaxReconnects(-1), nats.ReconnectWait(20*time.Millisecond))}
	e.start(cfg)
	revision := func() (uint64, error) {
		kv, err := e.js.KeyValue(context.Background(), streams.Agents)
		if err != nil {
			return 0, err
		}
		ent, err := kv.Get(context.Background(), "agent-hb")
		if err != nil {
			return 0, err
		}
		return ent.Revision(), nil
	}
	var before uint64
	natstest.CheckFor(t, wait, step, func() (err error) {
		before, err = revision()
		return err
	})
	e.restartNATS(opts)
	natstest.CheckFor(t, wait, step, func() error {
		after, err := revision()
		if err == nil && after <= before {
			err = fmt.Errorf("heartbeat revision %d, none after the reconnect (before: %d)", after, before)
		}
		return err
	})
}

func TestNATSRestartForgetsConsumer(t *testing.T) {
	t.Parallel()
	opts := natstest.Options(t.TempDir())
	e := &env{t: t, s: natstest.RunServerWithOptions(t, opts)}
	e.connect()
	dir := t.TempDir()
	cfg := agent.Config{DataDir: dir, ID: "agent-n", Capacity: map[string]string{"cpu": "4", "mem": "4g"}}
	a := e.start(cfg)
	before := spec("before")
	before.Run = &events.RunSpec{ID: "r1", Code: `print("before")`}
	e.schedule(a, before)
	e.waitExit(before.ID, "r1")
	a.stop()

	restart := func() {
		t.Helper()
		e.restartNATS(opts)
		if _, err := e.js.Consumer(context.Background(), streams.Work, "bai-agent-agent-n"); !errors.Is(err, jetstream.ErrConsumerNotFound) && !errors.Is(err, jetstream.ErrStreamNotFound) {
			t.Fatalf("work consumer after a NATS restart: %v, want it forgotten", err)
		}
	}
	restart()
	// Placed while the agent is down and the server has no consumer.
	during := spec("during")
	during.Run = &events.RunSpec{ID: "r1", Code: `print("during")`}
	e.publish(&events.Event{Name: events.EventScheduled, AccessKey: during.AccessKey, SessionID: during.ID,
		KernelID: during.MainKernelID, AgentID: "agent-n", AgentEpoch: 2, Session: during})
	// This agent has a connection of its own, which outlives the restart.
	cfg.NC = natstest.Connect(t, e.s, nats.MaxReconnects(-1), nats.ReconnectWait(20*time.Millisecond))
	cfg.WorkHeartbeat = 500 * time.Millisecond
	b := e.start(cfg)
	if o := e.waitExit(during.ID, "r1"); string(o.stdout) != "during\n" {
		t.Fatalf("work placed during the restart: stdout %q", o.stdout)
	}

	// The agent keeps running through a second restart, on the same port.
	restart()
	after := spec("after")
	after.Run = &events.RunSpec{ID: "r1", Code: `print("after")`}
	e.schedule(b, after)
	if o := e.waitExit(after.ID, "r1"); string(o.stdout) != "after\n" {
		t.Fatalf("work placed after the restart: stdout %q", o.stdout)
	}
	for _, sid := range []string{before.ID, during.ID, after.ID} {
		if c := count(e.sessionEvents(sid), events.EventKernelStarted); c != 1 {
			t.Errorf("session %s: %d kernel_started, want 1", sid, c)
		}
	}

	// The NATS store is lost: the work queue is made again and counts
	// from 1, below the agent's cursor; its work is still handled.
	opts.StoreDir = t.TempDir()
	restart()
	if err := streams.Provision(context.Background(), e.js, streams.Options{}); err != nil {
		t.Fatal(err)
	}
	fresh := spec("fresh")
	fresh.Run = &events.RunSpec{ID: "r1", Code: `print("fresh")`}
	e.schedule(b, fresh)
	if o := e.waitExit(fresh.ID, "r1"); string(o.stdout) != "fresh\n" {
		t.Fatalf("work in a new work queue: stdout %q", o.stdout)
	}
	b.stop() // before the server's cleanup
}

// connect (re)connects the test's client to its server.
// restartNATS stops the test's NATS server and starts it again with
// opts on the same port, and connects the test again.
func (e *env) restartNATS(opts *server.Options) {
	e.t.Helper()
	opts.Port = e.s.Addr().(*net.TCPAddr).Port
	e.nc.Close()
	e.s.Shutdown()
	e.s.WaitForShutdown()
	e.s = natstest.RunServerWithOptions(e.t, opts)
	e.connect()
}

func (e *env) connect() {
	e.t.Helper()
	e.nc = natstest.Connect(e.t, e.s)
	js, err := jetstream.New(e.nc)
	if err != nil {
		e.t.Fatal(err)
	}
	e.js = js
}
