package server

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/bai-sh/bai/internal/natstest"
	"github.com/bai-sh/bai/pkg/events"
	"github.com/bai-sh/bai/pkg/events/streams"
	"github.com/bai-sh/bai/services/agent"
	"github.com/bai-sh/bai/services/registry"
	"github.com/bai-sh/bai/services/scheduler"
	"github.com/bai-sh/bai/tools/bai/client"
)

// TestLostAgentsLateOutputIsRefused runs a session printing a line every
// 50 ms on a real bai-agent process, stops the agent (SIGSTOP) until the
// scheduler declares it lost and ends the session (agent-lost), then lets
// it go on (SIGCONT). The agent kills the kernel soon after, publishes no
// exit for the run, and logs show nothing the log stored after the
// session's end.
func TestLostAgentsLateOutputIsRefused(t *testing.T) {
	if testing.Short() {
		t.Skip("SKIP: builds and stops bai-agent (not in -short)")
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skipf("SKIP: no go tool to build bai-agent: %v", err)
	}
	bin := filepath.Join(t.TempDir(), "bai-agent")
	if out, err := exec.Command(goBin, "build", "-o", bin, "github.com/bai-sh/bai/services/agent/cmd/bai-agent").CombinedOutput(); err != nil {
		t.Fatalf("build bai-agent: %v\n%s", err, out)
	}
	ns := natstest.RunServer(t)
	connect := func() *nats.Conn {
		nc, err := nats.Connect(ns.ClientURL())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		return nc
	}
	ctx, cancel := context.WithCancel(context.Background())
	js, err := jetstream.New(connect())
	if err != nil {
		t.Fatal(err)
	}
	if err := streams.Provision(ctx, js, streams.Options{}); err != nil {
		t.Fatal(err)
	}
	reg, err := registry.New(registry.Config{NC: connect(), Path: filepath.Join(t.TempDir(), "registry.db")})
	if err != nil {
		t.Fatal(err)
	}
	sch, err := scheduler.New(scheduler.Config{NC: connect(), AgentTimeout: 3 * time.Second, Tick: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 2)
	go func() { done <- reg.Run(ctx) }()
	go func() { done <- sch.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		for range 2 {
			if err := <-done; err != nil {
				t.Errorf("service: %v", err)
			}
		}
	})
	for _, ready := range []<-chan struct{}{reg.Ready(), sch.Ready()} {
		select {
		case <-ready:
		case err := <-done:
			t.Fatalf("service: %v", err)
		case <-time.After(30 * time.Second):
			t.Fatal("services not ready")
		}
	}

	dir := t.TempDir()
	purgeAgentKernels(t, dir)
	log := &natstest.SyncBuffer{}
	cmd := exec.Command(bin, "-nats", ns.ClientURL(), "-data-dir", filepath.Join(dir, "agent"), "-id", "agent-stop")
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGCONT)
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("agent's log:\n%s", log.String())
		}
	})
	kv, err := js.KeyValue(ctx, streams.Agents)
	if err != nil {
		t.Fatal(err)
	}
	natstest.CheckFor(t, 30*time.Second, 50*time.Millisecond, func() error {
		_, err := kv.Get(ctx, "agent-stop")
		return err
	})

	const ak, sid = "AKSTALE", "stale-1"
	sp := &events.SessionSpec{ID: sid, Name: "stale", AccessKey: ak, Image: "python:3", RequestedImage: "python",
		Type: events.TypeInteractive, Slots: map[string]string{"cpu": "0.1", "mem": "64m"}, Domain: "default",
		Group: "default", ScalingGroup: "default", MainKernelID: "k-" + sid, CreatedAt: time.Now().UTC(),
		Run: &events.RunSpec{ID: "tick", Exec: "i=0; while true; do i=$((i+1)); echo tick $i; sleep 0.05; done"}}
	enq := &events.Event{V: events.Version, ID: "enq-" + sid, Name: events.EventEnqueued, Time: time.Now().UTC(),
		AccessKey: ak, SessionID: sid, KernelID: sp.MainKernelID, Session: sp}
	data, err := json.Marshal(enq)
	if err != nil {
		t.Fatal(err)
	}
	subj, err := events.EventSubject(enq)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, subj, data, jetstream.WithMsgID(enq.ID)); err != nil {
		t.Fatal(err)
	}
	cl, err := client.Connect(ctx, client.Options{URL: ns.ClientURL(), AccessKey: ak, SecretKey: "unused"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	natstest.CheckFor(t, 30*time.Second, 50*time.Millisecond, func() error {
		resp, err := cl.Logs(ctx, sid)
		if err != nil {
			return err
		}
		if len(resp.Chunks) < 3 {
			return fmt.Errorf("%d chunks of output", len(resp.Chunks))
		}
		return nil
	})

	if err := cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	var info *events.SessionInfo
	natstest.CheckFor(t, 30*time.Second, 50*time.Millisecond, func() error {
		info, err = cl.Get(ctx, sid)
		if err != nil {
			return err
		}
		if info.Status != events.StatusTerminated {
			return fmt.Errorf("session is %s", info.Status)
		}
		return nil
	})
	if info.StatusInfo != string(events.ReasonAgentLost) {
		t.Fatalf("session ended %q, want agent-lost", info.StatusInfo)
	}
	if err := cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	resumed := time.Now()
	// The agent learns of the end (the scheduler's kill order) and kills
	// the kernel.
	rt := agent.NewProcessRuntime(filepath.Join(dir, "agent", "kernels"), nil)
	rt.Sandbox(agent.SandboxOptions{})
	natstest.CheckFor(t, 30*time.Second, 50*time.Millisecond, func() error {
		if have, err := rt.Kernels(); err != nil || len(have) != 0 {
			return fmt.Errorf("kernels %v %v", have, err)
		}
		return nil
	})
	t.Logf("kernel gone %s after SIGCONT", time.Since(resumed).Truncate(time.Millisecond))

	// What the log stored after the end is not shown.
	st, err := js.Stream(ctx, streams.Sessions)
	if err != nil {
		t.Fatal(err)
	}
	end, err := st.GetMsg(ctx, 1, jetstream.WithGetMsgSubject("bai.session."+ak+"."+sid+"."+string(events.EventTerminated)))
	if err != nil {
		t.Fatal(err)
	}
	outSubj, err := events.OutputSubject(ak, sid, "tick")
	if err != nil {
		t.Fatal(err)
	}
	oc, err := js.OrderedConsumer(ctx, streams.Output, jetstream.OrderedConsumerConfig{FilterSubjects: []string{outSubj}})
	if err != nil {
		t.Fatal(err)
	}
	late, exits := 0, 0
	for {
		b, err := oc.FetchNoWait(500)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for m := range b.Messages() {
			n++
			md, err := m.Metadata()
			if err != nil {
				t.Fatal(err)
			}
			if md.Timestamp.After(end.Time) {
				late++
			}
			if m.Headers().Get(events.HeaderStream) == events.StreamExit {
				exits++
			}
		}
		if n == 0 {
			break
		}
	}
	t.Logf("output messages stored after the end: %d", late)
	if exits != 0 {
		t.Errorf("the run of a session ended as agent-lost has %d exit messages", exits)
	}
	resp, err := cl.Logs(ctx, sid)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range resp.Chunks {
		if c.Time.After(end.Time) || c.Stream == events.StreamExit {
			t.Errorf("logs show %s %q stored %s after the session ended", c.Stream, c.Data, c.Time.Sub(end.Time))
		}
	}
}
