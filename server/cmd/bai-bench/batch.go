package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/bai-sh/bai/pkg/events"
	"github.com/bai-sh/bai/server"
	"github.com/bai-sh/bai/tools/bai/client"
)

// batchScenario runs -sessions real batch sessions, -concurrency at a
// time (closed loop), on a real all-in-one server.Server: its one agent
// on the process runtime, sandboxed where the bench is root, each
// session's startup command /bin/true. A session is complete when its
// session_terminated reaches the bench's subscriber (after
// session_success, the task's exit code 0). It reports completed/s: the
// figure to hold against a batch scheduler's jobs/s (Slurm's
// `sbatch --wrap=true`).
func batchScenario(ctx context.Context, o options) error {
	srv, stop, err := startServer(ctx, server.Config{
		DataDir: filepath.Join(o.dir, "bai"), Listen: "127.0.0.1:-1", SyncAlways: o.syncAlways,
		// Capacity for every session in flight: the figure is the
		// pipeline's, not the host's core count.
		AgentCapacity: map[string]string{"cpu": "100000", "mem": "100000g"},
	})
	if err != nil {
		return err
	}
	defer stop()
	creds := srv.Credentials()
	cl, err := client.Connect(ctx, client.Options{URL: srv.ClientURL(), AccessKey: creds.AccessKey,
		SecretKey: creds.SecretKey, Timeout: 30 * time.Second})
	if err != nil {
		return err
	}
	defer cl.Close()
	fmt.Printf("batch: %d sessions of /bin/true, %d in flight, one real agent (process runtime; sandboxed: %v, the bench's euid is %d)\n",
		o.sessions, o.concurrency, os.Geteuid() == 0, os.Geteuid())

	n := o.sessions
	fin := make([]chan struct{}, n)
	for i := range fin {
		fin[i] = make(chan struct{})
	}
	var completed, succeeded, failed atomic.Int64
	// When each session's steps reached the bench: created (answered),
	// scheduled, started, success, terminated.
	const nSteps = 5
	stepAt := make([][nSteps]atomic.Int64, n)
	var firstFailure atomic.Value // the first failure event, as it came
	mark := func(i, step int) { stepAt[i][step].CompareAndSwap(0, time.Now().UnixNano()) }
	filter, _ := events.LiveOwnerSessionsFilter(creds.AccessKey)
	sub, err := cl.Conn().Subscribe(filter, func(m *nats.Msg) {
		subj, err := events.FromLive(m.Subject)
		if err != nil {
			return
		}
		ss, err := events.ParseSessionSubject(subj)
		if err != nil || len(ss.SessionID) < 2 || ss.SessionID[0] != 'j' {
			return
		}
		i, err := strconv.Atoi(ss.SessionID[1:])
		if err != nil || i < 0 || i >= n {
			return
		}
		switch ss.Name {
		case events.EventScheduled:
			mark(i, 1)
		case events.EventStarted:
			mark(i, 2)
		case events.EventSuccess:
			mark(i, 3)
			succeeded.Add(1)
		case events.EventFailure:
			if failed.Add(1) == 1 {
				firstFailure.Store(string(m.Data))
			}
		case events.EventTerminated:
			mark(i, 4)
			select {
			case <-fin[i]:
			default:
				completed.Add(1)
				close(fin[i])
			}
		}
	})
	if err != nil {
		return err
	}
	_ = sub.SetPendingLimits(-1, -1)
	defer func() { _ = sub.Unsubscribe() }()
	if err := cl.Conn().Flush(); err != nil {
		return err
	}
	lat := make([]time.Duration, n)
	var (
		errOnce  sync.Once
		firstErr error
		next     atomic.Int64
		wg       sync.WaitGroup
	)
	stopProf, err := profile(o)
	if err != nil {
		return err
	}
	start, cpu0, child0, machine0 := time.Now(), cpuTime(), childCPUTime(), machineCPUTime()
	for range max(o.concurrency, 1) {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n || ctx.Err() != nil {
					return
				}
				t0 := time.Now()
				for {
					_, err := cl.Create(ctx, events.CreateRequest{
						SessionID: fmt.Sprintf("j%07d", i), Image: "python", Type: events.TypeBatch,
						StartupCommand: "/bin/true", Slots: []string{"cpu=1", "mem=64m"},
					})
					if errors.Is(err, events.ErrBusy) && ctx.Err() == nil {
						time.Sleep(time.Millisecond)
						continue
					}
					if err != nil {
						errOnce.Do(func() { firstErr = err })
						return
					}
					break
				}
				mark(i, 0)
				select {
				case <-fin[i]:
					lat[i] = time.Since(t0)
				case <-ctx.Done():
					return
				}
			}
		})
	}
	wg.Wait()
	elapsed, cpu, child, machine := time.Since(start), cpuTime()-cpu0, childCPUTime()-child0, machineCPUTime()-machine0
	stopProf()
	errOnce.Do(func() {})
	c := completed.Load()
	fmt.Printf("completed %d of %d (success %d, failure %d) in %v: %.0f completed/s\n",
		c, n, succeeded.Load(), failed.Load(), elapsed.Round(time.Millisecond), float64(c)/elapsed.Seconds())
	var ls []time.Duration
	for _, d := range lat {
		if d > 0 {
			ls = append(ls, d)
		}
	}
	printLat("create→terminated", ls)
	for k, name := range []string{"create answered → scheduled", "scheduled → started", "started → success", "success → terminated"} {
		var ds []time.Duration
		for i := range stepAt {
			a, b := stepAt[i][k].Load(), stepAt[i][k+1].Load()
			if a > 0 && b > 0 {
				ds = append(ds, time.Duration(b-a))
			}
		}
		printLat("  "+name, ds)
	}
	if c > 0 {
		perSession := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 / float64(c) }
		fmt.Printf("cpu: %.2fs user+sys of this process (server, agent, bench), %.3f ms per session; its waited-for children (sandbox helpers and what they ran): %.3f ms per session\n",
			cpu.Seconds(), perSession(cpu), perSession(child))
		fmt.Printf("cpu of the whole machine (every process and the kernel's threads, /proc/stat): %.2fs, %.3f ms per session\n",
			machine.Seconds(), perSession(machine))
	}
	if f, ok := firstFailure.Load().(string); ok {
		fmt.Printf("first failure: %.500s\n", f)
	}
	if la, err := os.ReadFile("/proc/loadavg"); err == nil {
		fmt.Printf("load average at the end: %s", la)
	}
	switch {
	case firstErr != nil:
		return firstErr
	case int(c) < n:
		return fmt.Errorf("only %d of %d batch sessions completed: %w", c, n, ctx.Err())
	case failed.Load() > 0:
		return fmt.Errorf("%d batch sessions failed", failed.Load())
	}
	return nil
}

// machineCPUTime is the CPU time the whole machine spent busy (neither
// idle nor waiting for I/O), from /proc/stat.
func machineCPUTime() time.Duration {
	data, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(data), "\n")
	f := strings.Fields(line) // cpu user nice system idle iowait irq softirq steal ...
	var busy int64
	for i := 1; i < len(f) && i <= 8; i++ {
		if i == 4 || i == 5 {
			continue // idle, iowait
		}
		v, _ := strconv.ParseInt(f[i], 10, 64)
		busy += v
	}
	return time.Duration(busy) * time.Second / 100 // USER_HZ
}

// childCPUTime is the user and system CPU time of this process's waited-for
// children (the sandbox helpers and what they ran).
func childCPUTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_CHILDREN, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// startServer runs a real all-in-one server.Server of cfg until the
// returned stop; it returns once the server is ready.
func startServer(ctx context.Context, cfg server.Config) (*server.Server, func(), error) {
	srv, err := server.New(cfg)
	if err != nil {
		return nil, nil, err
	}
	sctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- srv.Run(sctx) }()
	stop := func() {
		cancel()
		<-done
	}
	select {
	case <-srv.Ready():
		return srv, stop, nil
	case err := <-done:
		cancel()
		return nil, nil, err
	case <-ctx.Done():
		stop()
		return nil, nil, ctx.Err()
	}
}
