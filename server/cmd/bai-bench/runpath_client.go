package main

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"github.com/bai-sh/bai/pkg/events"
	"github.com/bai-sh/bai/server"
	"github.com/bai-sh/bai/tools/bai/client"
)

// runpathClient times a run --rm and an exec into a live session as the
// CLI does them, in this process with the client package, against a real
// all-in-one server.Server (its agent on the process runtime, sandboxed
// where the bench is root), in parts: connect; admission (the create or
// execute answer); placement and start (session_scheduled and
// session_started reaching the client); the first stdout chunk and the
// exit chunk reaching it; for run --rm also the termination. Each part is
// the time since the previous one, on the client's clock; where the
// event's own time is known (publisher's clock, same host) its publish →
// delivery share is printed too.
func runpathClient(ctx context.Context, o options) error {
	srv, stop, err := startServer(ctx, server.Config{DataDir: filepath.Join(o.dir, "bai-client"), Listen: "127.0.0.1:-1"})
	if err != nil {
		return err
	}
	defer stop()
	creds := srv.Credentials()
	connect := func() (*client.Client, error) {
		return client.Connect(ctx, client.Options{URL: srv.ClientURL(), AccessKey: creds.AccessKey, SecretKey: creds.SecretKey})
	}
	parts := map[string][]time.Duration{}
	var order []string
	add := func(name string, d time.Duration) {
		if _, ok := parts[name]; !ok {
			order = append(order, name)
		}
		parts[name] = append(parts[name], d)
	}
	// follow waits on w for the run's stdout and exit chunks, recording
	// each part.
	follow := func(w *client.Watcher, prefix, runID string, last time.Time) error {
		gotOut, gotExit := false, false
		for !gotExit {
			it, err := w.Next(ctx)
			if err != nil {
				return err
			}
			now := time.Now()
			switch {
			case it.Event != nil:
				switch it.Event.Name {
				case events.EventScheduled:
					add(prefix+"placement (session_scheduled at the client)", now.Sub(last))
					add(prefix+"  of it: scheduled event publish→client", now.Sub(it.Event.Time))
					last = now
				case events.EventStarted:
					add(prefix+"kernel start (session_started at the client)", now.Sub(last))
					add(prefix+"  of it: started event publish→client", now.Sub(it.Event.Time))
					last = now
				case events.EventTerminated, events.EventError, events.EventFailure:
					return fmt.Errorf("run ended by %s", it.Event.Name)
				}
			case it.Output != nil && it.Output.RunID == runID:
				switch it.Output.Stream {
				case events.StreamStdout:
					if !gotOut {
						add(prefix+"execution to first stdout at the client", now.Sub(last))
						last, gotOut = now, true
					}
				case events.StreamExit:
					if it.Output.ExitCode != 0 {
						return fmt.Errorf("exit code %d", it.Output.ExitCode)
					}
					add(prefix+"stdout → exit chunk at the client", now.Sub(last))
					last, gotExit = now, true
				}
			}
		}
		return nil
	}
	runRm := func(record bool) error {
		t0 := time.Now()
		cl, err := connect()
		if err != nil {
			return err
		}
		defer cl.Close()
		t1 := time.Now()
		sid, runID := client.NewID(), client.NewID()
		w, err := cl.WatchOwn(sid)
		if err != nil {
			return err
		}
		defer w.Close()
		w.FromStart(runID)
		run := events.RunSpec{ID: runID, Code: "print(1)"}
		if _, err := cl.Create(ctx, events.CreateRequest{SessionID: sid, Image: "python", Run: &run}); err != nil {
			return err
		}
		t2 := time.Now()
		pre := "run --rm: "
		if !record {
			pre = "warm-up: "
		}
		add(pre+"connect", t1.Sub(t0))
		add(pre+"admission (create answered)", t2.Sub(t1))
		if err := follow(w, pre, runID, t2); err != nil {
			return err
		}
		t3 := time.Now()
		if err := terminateAndWait(ctx, cl, w, sid); err != nil {
			return err
		}
		add(pre+"terminate → session_terminated", time.Since(t3))
		add(pre+"TOTAL to exit chunk", t3.Sub(t0))
		return nil
	}
	// The live session of the exec part.
	cl, err := connect()
	if err != nil {
		return err
	}
	defer cl.Close()
	liveID := client.NewID()
	lw, err := cl.WatchOwn(liveID)
	if err != nil {
		return err
	}
	defer lw.Close()
	if _, err := cl.Create(ctx, events.CreateRequest{SessionID: liveID, Image: "python"}); err != nil {
		return err
	}
	// The live session ends before the server does: its kernel's work
	// directory is a mount under the data directory.
	defer func() { _ = terminateAndWait(ctx, cl, lw, liveID) }()
	for {
		info, err := cl.Get(ctx, liveID)
		if err != nil && !errors.Is(err, events.ErrNotFound) {
			return err
		}
		if err == nil && info.Status == events.StatusRunning {
			break
		}
		select {
		case <-time.After(10 * time.Millisecond):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	execLive := func(record bool) error {
		t0 := time.Now()
		cl, err := connect()
		if err != nil {
			return err
		}
		defer cl.Close()
		t1 := time.Now()
		// As the CLI's reuse rule does: the live session looked up first.
		if info, err := cl.Get(ctx, liveID); err != nil || info.Status != events.StatusRunning {
			return fmt.Errorf("live session: %v %v", info, err)
		}
		tGet := time.Now()
		runID := client.NewID()
		w, err := cl.WatchOwn(liveID)
		if err != nil {
			return err
		}
		defer w.Close()
		w.FromStart(runID)
		if _, err := cl.Execute(ctx, events.ExecuteRequest{SessionID: liveID, Image: "python",
			Run: events.RunSpec{ID: runID, Code: "print(1)"}}); err != nil {
			return err
		}
		t2 := time.Now()
		pre := "exec: "
		if !record {
			pre = "warm-up: "
		}
		add(pre+"connect", t1.Sub(t0))
		add(pre+"the session looked up (get)", tGet.Sub(t1))
		add(pre+"admission (execute answered)", t2.Sub(tGet))
		if err := follow(w, pre, runID, t2); err != nil {
			return err
		}
		add(pre+"TOTAL to exit chunk", time.Since(t0))
		return nil
	}
	for i := range o.cliRuns + 2 {
		if err := runRm(i >= 2); err != nil {
			return fmt.Errorf("run --rm: %w", err)
		}
		if err := execLive(i >= 2); err != nil {
			return fmt.Errorf("exec: %w", err)
		}
	}
	fmt.Printf("client side, in process (client package), %d runs each, interleaved, after 2 warm-up rounds:\n", o.cliRuns)
	for _, name := range order {
		if len(name) >= 8 && name[:8] == "warm-up:" {
			continue
		}
		printLat(name, parts[name])
	}
	return nil
}
