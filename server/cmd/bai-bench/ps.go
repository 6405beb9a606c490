package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/bai-sh/bai/pkg/events"
	"github.com/bai-sh/bai/pkg/events/streams"
	"github.com/bai-sh/bai/server"
	"github.com/bai-sh/bai/tools/bai/cli"
	"github.com/bai-sh/bai/tools/bai/client"
)

// psScenario fills the session log with -ps-sessions session_enqueued
// events, as the gateway writes them (same subjects, message ids and
// specs), lets the real registry project them, then times the first page
// of ps through the client. No scheduler runs: the sessions stay PENDING,
// so that every one of them is in ps's default listing.
func psScenario(ctx context.Context, o options, cfg clusterConfig) error {
	fmt.Printf("starting NATS, gateway and registry...\n")
	c, err := startCluster(cfg)
	if err != nil {
		return err
	}
	defer func() {
		if err := c.stop(); err != nil {
			fmt.Println("service errors:", err)
		}
	}()
	nc, err := c.serviceConn("filler")
	if err != nil {
		return err
	}
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(4096))
	if err != nil {
		return err
	}
	t0 := time.Now()
	var last uint64
	acks := make([]jetstream.PubAckFuture, 0, 4096)
	flush := func() error {
		for _, f := range acks {
			select {
			case a := <-f.Ok():
				last = max(last, a.Sequence)
			case err := <-f.Err():
				return err
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		acks = acks[:0]
		return nil
	}
	for i := range o.psSessions {
		id := fmt.Sprintf("b%07d", i)
		now := time.Now().UTC()
		ev := &events.Event{
			V: events.Version, ID: randHex(11), Name: events.EventEnqueued, Time: now,
			AccessKey: benchAK, SessionID: id, KernelID: "k" + id,
			Session: &events.SessionSpec{
				ID: id, Name: "bai-" + id, AccessKey: benchAK, Image: "cr.backend.ai/python:3.11",
				RequestedImage: "python", Type: events.TypeInteractive,
				Slots:  map[string]string{"cpu": "1", "mem": "268435456"},
				Domain: "default", Group: "default", ScalingGroup: "default",
				MainKernelID: "k" + id, CreatedAt: now,
			},
		}
		subj, _ := events.EventSubject(ev)
		data, err := json.Marshal(ev)
		if err != nil {
			return err
		}
		f, err := js.PublishAsync(subj, data, jetstream.WithMsgID("create."+benchAK+"."+id),
			jetstream.WithExpectStream(streams.Sessions))
		if err != nil {
			return err
		}
		acks = append(acks, f)
		if len(acks) == cap(acks) {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	if err := flush(); err != nil {
		return err
	}
	published := time.Since(t0)
	for c.reg.AppliedSeq() < last && ctx.Err() == nil {
		time.Sleep(10 * time.Millisecond)
	}
	if ctx.Err() != nil {
		return fmt.Errorf("registry applied %d of %d: %w", c.reg.AppliedSeq(), last, ctx.Err())
	}
	filled := time.Since(t0)
	fmt.Printf("log filled with %d sessions in %v; registry projected them after %v (%.0f events/s)\n",
		o.psSessions, published.Round(time.Millisecond), filled.Round(time.Millisecond),
		float64(o.psSessions)/filled.Seconds())
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	rss, _ := memStatus()
	fmt.Printf("after the fill: RSS %s, Go heap in use %s (NATS, registry and the rest together)\n",
		mib(rss), mib(ms.HeapInuse))
	if o.memProfile != "" {
		f, err := os.Create(o.memProfile)
		if err != nil {
			return err
		}
		err = pprof.WriteHeapProfile(f)
		f.Close()
		if err != nil {
			return err
		}
	}
	if fi, err := os.Stat(filepath.Join(o.dir, "registry.db")); err == nil {
		fmt.Printf("registry.db %s\n", mib(uint64(fi.Size())))
	}

	cl, err := c.client(ctx)
	if err != nil {
		return err
	}
	defer cl.Close()
	stopProf, err := profile(o)
	if err != nil {
		return err
	}
	lat := make([]time.Duration, 0, o.psQueries)
	var total int
	for range o.psQueries {
		q0 := time.Now()
		resp, err := cl.List(ctx, events.ListRequest{})
		if err != nil {
			stopProf()
			return fmt.Errorf("ps: %w", err)
		}
		lat = append(lat, time.Since(q0))
		total = resp.Total
		if len(resp.Sessions) != 10 {
			stopProf()
			return fmt.Errorf("ps: first page has %d sessions", len(resp.Sessions))
		}
	}
	stopProf()
	fmt.Printf("ps first page (limit 10 of %d sessions, %d queries in a row):\n", total, o.psQueries)
	printLat("ps first page", lat)
	return nil
}

// cliScenario times `bai run --rm -c 'print(1)' python` against a real
// all-in-one server (process runtime) in this process, against bare
// `python3 -c 'print(1)'`, run alternately.
func cliScenario(ctx context.Context, o options) error {
	bai := o.baiBin
	if bai == "" {
		self, err := os.Executable()
		if err != nil {
			return err
		}
		bai = filepath.Join(filepath.Dir(self), "bai")
	}
	if _, err := os.Stat(bai); err != nil {
		return fmt.Errorf("bai binary: %w (make build, or -bai)", err)
	}
	// The interpreter the process runtime runs: /usr/bin/python3 first
	// (python3 on PATH may be a slow shim, pyenv's say).
	python := "/usr/bin/python3"
	if _, err := os.Stat(python); err != nil {
		if python, err = exec.LookPath("python3"); err != nil {
			return err
		}
	}
	fmt.Printf("bare interpreter: %s\n", python)
	srv, stop, err := startServer(ctx, server.Config{DataDir: filepath.Join(o.dir, "bai"), Listen: "127.0.0.1:-1", SyncAlways: o.syncAlways})
	if err != nil {
		return err
	}
	defer stop()
	env := append(os.Environ(), "XDG_DATA_HOME="+o.dir)
	// Each bai run prints its steps (BAI_TIMING, from its exec on):
	// steps[command] collects each step's time, from the step before.
	steps := map[string]*cliSteps{}
	// hugeOff is bai's switch for its heap on a huge page (package
	// tools/bai/internal/hugeheap): the same binary, with and without.
	hugeOff := []string{"BAI_HUGEPAGE=0"}
	timeOne := func(extra []string, argv ...string) (time.Duration, error) {
		cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
		var stdout, stderr strings.Builder
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		cmd.Env = append(slices.Clip(env), extra...)
		t0 := time.Now()
		if argv[0] == bai {
			cmd.Env = append(cmd.Env, "BAI_TIMING="+strconv.FormatInt(t0.UnixNano(), 10))
		}
		err := cmd.Run()
		d := time.Since(t0)
		if err != nil || strings.TrimSpace(stdout.String()) != "1" {
			return 0, fmt.Errorf("%s: %v: %q %q", strings.Join(argv, " "), err, stdout.String(), stderr.String())
		}
		if argv[0] == bai {
			name := strings.Join(append(slices.Clip(argv[1:3]), extra...), " ")
			if steps[name] == nil {
				steps[name] = &cliSteps{}
			}
			if err := steps[name].add(stderr.String()); err != nil {
				return 0, fmt.Errorf("%s: %w", strings.Join(argv, " "), err)
			}
		}
		return d, nil
	}
	// The live session of the exec figure: made by the first run, reused
	// by the others (bai run --name finds it).
	if _, err := timeOne(nil, bai, "run", "--name", "live", "-c", "print(1)", "python"); err != nil {
		return err
	}
	// Ended before the server stops: the kernel's work directory is a
	// mount under the data directory, which a stopping agent leaves.
	defer endAndWait(ctx, srv, "live")
	helpOne := func(extra []string) (time.Duration, error) {
		cmd := exec.CommandContext(ctx, bai, "--help")
		cmd.Env = append(slices.Clip(env), extra...)
		t0 := time.Now()
		err := cmd.Run()
		return time.Since(t0), err
	}
	var py, bi, biOff, live, help, helpOff []time.Duration
	for i := range o.cliRuns + 2 {
		var d [6]time.Duration
		var err error
		for j, f := range []func() (time.Duration, error){
			func() (time.Duration, error) { return timeOne(nil, python, "-c", "print(1)") },
			func() (time.Duration, error) { return timeOne(nil, bai, "run", "--rm", "-c", "print(1)", "python") },
			func() (time.Duration, error) {
				return timeOne(nil, bai, "run", "--name", "live", "-c", "print(1)", "python")
			},
			func() (time.Duration, error) { return helpOne(nil) },
			func() (time.Duration, error) { return timeOne(hugeOff, bai, "run", "--rm", "-c", "print(1)", "python") },
			func() (time.Duration, error) { return helpOne(hugeOff) },
		} {
			if d[j], err = f(); err != nil {
				return err
			}
		}
		if i >= 2 { // two warm-up runs each
			py, bi, live, help = append(py, d[0]), append(bi, d[1]), append(live, d[2]), append(help, d[3])
			biOff, helpOff = append(biOff, d[4]), append(helpOff, d[5])
		} else {
			clear(steps)
		}
	}
	fmt.Printf("%d runs each, alternating, after 2 warm-up runs each:\n", o.cliRuns)
	printLat("python3 -c 'print(1)'", py)
	printLat("bai run --rm (process)", bi)
	printLat("bai run --name live (exec)", live)
	printLat("bai --help (client start)", help)
	printLat("bai run --rm, BAI_HUGEPAGE=0", biOff)
	printLat("bai --help, BAI_HUGEPAGE=0", helpOff)
	fmt.Printf("median overhead of bai run --rm over bare python3: %v\n", rnd(median(bi)-median(py)))
	fmt.Printf("median overhead of an exec into a live session over bare python3: %v\n", rnd(median(live)-median(py)))
	fmt.Printf("heap on a huge page, on/off (medians): bai --help %.2f, bai run --rm %.2f\n",
		float64(median(help))/float64(median(helpOff)), float64(median(bi))/float64(median(biOff)))
	for _, c := range []struct{ name, title string }{
		{"run --rm", "bai run --rm"},
		{"run --name", "bai run --name live (exec)"},
		{"run --rm BAI_HUGEPAGE=0", "bai run --rm, BAI_HUGEPAGE=0"},
	} {
		if st := steps[c.name]; st != nil {
			fmt.Printf("%s, step by step (BAI_TIMING; each from the step before, the first from the exec of bai):\n", c.title)
			for _, n := range st.order {
				title := cliStepTitle[n]
				if title == "" {
					title = n
				}
				printLat("  "+n+": "+title, st.took[n])
			}
		}
	}
	if la, err := os.ReadFile("/proc/loadavg"); err == nil {
		fmt.Printf("load average at the end: %s", la)
	}
	return nil
}

func median(d []time.Duration) time.Duration {
	s := append([]time.Duration(nil), d...)
	for i := range s { // insertion sort: tiny slices
		for j := i; j > 0 && s[j] < s[j-1]; j-- {
			s[j], s[j-1] = s[j-1], s[j]
		}
	}
	return s[len(s)/2]
}

// endAndWait terminates the session named name on srv and waits, 30 s at
// most, until it has ended.
func endAndWait(ctx context.Context, srv *server.Server, name string) {
	creds := srv.Credentials()
	cl, err := client.Connect(ctx, client.Options{URL: srv.ClientURL(), AccessKey: creds.AccessKey, SecretKey: creds.SecretKey})
	if err != nil {
		return
	}
	defer cl.Close()
	info, err := cl.Get(ctx, name)
	if err != nil {
		return
	}
	w, err := cl.WatchOwn(info.ID)
	if err != nil {
		return
	}
	defer w.Close()
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := terminateAndWait(wctx, cl, w, info.ID); err != nil {
		fmt.Printf("session %s did not end: %v\n", name, err)
	}
}

// terminateAndWait terminates session sid and waits on w (its watch,
// subscribed before) for its session_terminated.
func terminateAndWait(ctx context.Context, cl *client.Client, w *client.Watcher, sid string) error {
	if _, err := cl.Terminate(ctx, sid); err != nil {
		return err
	}
	for {
		it, err := w.Next(ctx)
		if err != nil {
			return err
		}
		if it.Event != nil && it.Event.Name == events.EventTerminated {
			return nil
		}
	}
}

// cliSteps are the steps of one command's runs, from their BAI_TIMING
// lines: each step's time from the one before it.
type cliSteps struct {
	order []string
	took  map[string][]time.Duration
}

// cliStepTitle says what each step of bai's timing line covers.
var cliStepTitle = map[string]string{
	"main":         "start: exec to main (Go runtime, package init)",
	"connected":    "flags, credentials, connect, authentication",
	"accepted":     "create or look-up and execute answered",
	"first-output": "to the first output (place, start, sandbox, interpreter)",
	"exit":         "to the exit code",
	"removed":      "--rm: terminate answered, TERMINATING seen",
	"end":          "to the end of bai's main",
}

func (s *cliSteps) add(stderr string) error {
	steps, err := cli.ParseTiming(stderr)
	if err != nil {
		return err
	}
	if s.took == nil {
		s.took = map[string][]time.Duration{}
	}
	prev := 0.0
	for _, st := range steps {
		if _, ok := s.took[st.Name]; !ok {
			s.order = append(s.order, st.Name)
		}
		s.took[st.Name] = append(s.took[st.Name], time.Duration((st.MS-prev)*float64(time.Millisecond)))
		prev = st.MS
	}
	return nil
}
