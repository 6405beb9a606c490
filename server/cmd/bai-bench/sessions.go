package main

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/bai-sh/bai/pkg/events"
	"github.com/bai-sh/bai/tools/bai/client"
)

// tracker records, per session, when it was enqueued (the request sent, or
// its intended send time in open loop), accepted (the gateway answered),
// placed (session_scheduled reached the subscriber) and RUNNING
// (session_started reached the subscriber); and each event's publish →
// delivery latency (its Time, set just before the publish, to its arrival).
type tracker struct {
	base                  time.Time
	enq, acc, sched, runn []atomic.Int64 // ns since base; 0: not yet
	done                  []chan struct{}
	nSched, nRun          atomic.Int64
	tg                    *target

	mu    sync.Mutex
	evLat []time.Duration
}

func newTracker(n int, notify bool, tg *target) *tracker {
	t := &tracker{
		base: time.Now(), tg: tg,
		enq: make([]atomic.Int64, n), acc: make([]atomic.Int64, n),
		sched: make([]atomic.Int64, n), runn: make([]atomic.Int64, n),
		evLat: make([]time.Duration, 0, 8*n),
	}
	if notify {
		t.done = make([]chan struct{}, n)
		for i := range t.done {
			t.done[i] = make(chan struct{})
		}
	}
	return t
}

func (t *tracker) since(at time.Time) int64 { return max(int64(at.Sub(t.base)), 1) }

// onEvent is the subscriber's handler.
func (t *tracker) onEvent(m *nats.Msg) {
	now := time.Now()
	subj, err := events.FromLive(m.Subject)
	if err != nil {
		return
	}
	ss, err := events.ParseSessionSubject(subj)
	if err != nil {
		return
	}
	var ev struct {
		Time time.Time `json:"time"`
	}
	if events.Unmarshal(m.Data, &ev) == nil && !ev.Time.IsZero() {
		t.mu.Lock()
		t.evLat = append(t.evLat, now.Sub(ev.Time))
		t.mu.Unlock()
	}
	i := t.tg.index(ss.SessionID)
	if i < 0 || i >= len(t.enq) {
		return
	}
	switch ss.Name {
	case events.EventScheduled:
		if t.sched[i].CompareAndSwap(0, t.since(now)) {
			t.nSched.Add(1)
		}
	case events.EventStarted:
		if t.runn[i].CompareAndSwap(0, t.since(now)) {
			t.nRun.Add(1)
			if t.done != nil {
				close(t.done[i])
			}
		}
	}
}

// counts of request outcomes.
type outcomes struct {
	accepted, busy, other atomic.Int64
	firstErr              atomic.Value
}

func (o *outcomes) record(err error) {
	switch {
	case err == nil:
		o.accepted.Add(1)
	case errors.Is(err, events.ErrBusy):
		o.busy.Add(1)
	default:
		if o.other.Add(1) == 1 {
			o.firstErr.Store(err.Error())
		}
	}
}

// closedResult is a closed loop's figure, for the floor beside it.
type closedResult struct {
	n       int
	elapsed time.Duration
	cpu     time.Duration
}

func sessionsScenario(ctx context.Context, o options, cfg clusterConfig, res *closedResult) error {
	tg, err := sessionsTarget(ctx, o, cfg)
	if err != nil {
		return err
	}
	defer func() {
		if err := tg.stop(); err != nil {
			fmt.Println("service errors:", err)
		}
	}()
	slots := strings.Split(o.slots, ",")
	if o.slots == "" {
		slots = []string{"cpu=1", "mem=256m"}
		if tg.external {
			// A real agent's capacity is its host's: small sessions
			// leave room for the whole loop.
			slots = []string{"cpu=0.1", "mem=64m"}
		}
	}

	nClients := 4
	clients := make([]*client.Client, nClients+1)
	for i := range clients {
		if clients[i], err = tg.connect(ctx); err != nil {
			return err
		}
		defer clients[i].Close()
	}
	t := newTracker(o.sessions, o.scenario == "closed" || tg.external, tg)
	filter, _ := events.LiveOwnerSessionsFilter(tg.ak)
	sub, err := clients[nClients].Conn().Subscribe(filter, t.onEvent)
	if err != nil {
		return err
	}
	_ = sub.SetPendingLimits(-1, -1)
	if err := clients[nClients].Conn().Flush(); err != nil {
		return err
	}
	defer func() { _ = sub.Unsubscribe() }()

	create := func(ctx context.Context, cl *client.Client, i int) error {
		_, err := cl.Create(ctx, events.CreateRequest{SessionID: tg.sid(i), Image: "python", Slots: slots})
		return err
	}
	// A running bai's agents have a real capacity: each session is
	// removed once RUNNING (outside the figures), as the loop goes on.
	var removes sync.WaitGroup
	var removeErrs atomic.Int64
	remove := func(i int) {
		if !tg.external {
			return
		}
		removes.Go(func() {
			select {
			case <-t.done[i]:
			case <-ctx.Done():
				return
			}
			rctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if _, err := clients[i%nClients].Terminate(rctx, tg.sid(i)); err != nil && removeErrs.Add(1) == 1 {
				fmt.Println("remove a session:", err)
			}
		})
	}
	var out outcomes
	stopProf, err := profile(o)
	if err != nil {
		return err
	}
	if err := writeHeap(o.memProfile, ".base"); err != nil {
		return err
	}
	start, cpu0 := time.Now(), cpuTime()
	switch o.scenario {
	case "closed":
		fmt.Printf("closed loop: %d sessions, %d in flight\n", o.sessions, o.concurrency)
		var next atomic.Int64
		var wg sync.WaitGroup
		for w := range o.concurrency {
			cl := clients[w%nClients]
			wg.Go(func() {
				for {
					i := int(next.Add(1) - 1)
					if i >= o.sessions || ctx.Err() != nil {
						return
					}
					t.enq[i].Store(t.since(time.Now()))
					for {
						err := create(ctx, cl, i)
						if errors.Is(err, events.ErrBusy) && ctx.Err() == nil {
							out.busy.Add(1)
							time.Sleep(time.Millisecond)
							continue
						}
						out.record(err)
						if err != nil {
							break
						}
						t.acc[i].Store(t.since(time.Now()))
						remove(i)
						select {
						case <-t.done[i]:
						case <-ctx.Done():
						}
						break
					}
				}
			})
		}
		wg.Wait()
	case "open", "flood":
		fmt.Printf("%s loop: %d sessions at %.0f/s\n", o.scenario, o.sessions, o.rate)
		reqTimeout := 30 * time.Second
		if o.scenario == "flood" {
			reqTimeout = 5 * time.Second
		}
		period := float64(time.Second) / o.rate
		var wg sync.WaitGroup
		t0 := time.Now()
		for i := range o.sessions {
			intended := t0.Add(time.Duration(math.Round(float64(i) * period)))
			if d := time.Until(intended); d > 0 {
				time.Sleep(d)
			}
			if ctx.Err() != nil {
				break
			}
			t.enq[i].Store(t.since(intended))
			cl := clients[i%nClients]
			wg.Go(func() {
				rctx, cancel := context.WithTimeout(ctx, reqTimeout)
				defer cancel()
				err := create(rctx, cl, i)
				out.record(err)
				if err == nil {
					t.acc[i].Store(t.since(time.Now()))
					remove(i)
				}
			})
		}
		sent := time.Since(t0)
		wg.Wait()
		fmt.Printf("sent %d requests in %v (%.0f/s offered)\n", o.sessions, sent.Round(time.Millisecond),
			float64(o.sessions)/sent.Seconds())
	}
	// Every accepted session should reach RUNNING.
	waitStart := time.Now()
	for t.nRun.Load() < out.accepted.Load() && ctx.Err() == nil {
		time.Sleep(5 * time.Millisecond)
	}
	stopProf()
	elapsed, cpu := time.Since(start), cpuTime()-cpu0
	if err := writeHeap(o.memProfile, ""); err != nil {
		return err
	}
	if ctx.Err() != nil {
		fmt.Printf("TIMEOUT: %d of %d accepted sessions RUNNING\n", t.nRun.Load(), out.accepted.Load())
	}
	t.report(o, &out, elapsed, time.Since(waitStart))
	warnings.report()
	removes.Wait()
	if n := removeErrs.Load(); n > 0 {
		return fmt.Errorf("%d sessions could not be removed", n)
	}
	*res = closedResult{n: int(t.nRun.Load()), elapsed: elapsed, cpu: cpu}
	if n := t.nRun.Load(); n > 0 {
		// Steadier than the rates on a shared machine: compare these
		// between builds.
		whose := "the whole process: NATS, services, agents, the bench's clients"
		if tg.external {
			whose = "the bench's process only: its clients"
		}
		fmt.Printf("cpu: %.2fs user+sys, %.0f%% of one core; %.3f ms per RUNNING session (%s)\n",
			cpu.Seconds(), 100*cpu.Seconds()/elapsed.Seconds(), float64(cpu.Microseconds())/1000/float64(n), whose)
	}
	if n, a := t.nRun.Load(), out.accepted.Load(); n < a {
		return fmt.Errorf("only %d of %d accepted sessions reached RUNNING", n, a)
	}
	if o.scenario != "flood" && out.other.Load() > 0 {
		return fmt.Errorf("%d requests failed", out.other.Load())
	}
	return nil
}

func (t *tracker) report(o options, out *outcomes, elapsed, drain time.Duration) {
	var firstEnq, lastAcc, lastSched, lastRun int64 = math.MaxInt64, 0, 0, 0
	var accLat, schedLat, runLat []time.Duration
	for i := range t.enq {
		e := t.enq[i].Load()
		if e == 0 {
			continue
		}
		firstEnq = min(firstEnq, e)
		if a := t.acc[i].Load(); a != 0 {
			lastAcc = max(lastAcc, a)
			accLat = append(accLat, time.Duration(a-e))
		}
		if s := t.sched[i].Load(); s != 0 {
			lastSched = max(lastSched, s)
			schedLat = append(schedLat, time.Duration(s-e))
		}
		if r := t.runn[i].Load(); r != 0 {
			lastRun = max(lastRun, r)
			runLat = append(runLat, time.Duration(r-e))
		}
	}
	rate := func(n int, last int64) string {
		if n == 0 || last <= firstEnq {
			return "-"
		}
		return fmt.Sprintf("%.0f/s", float64(n)/time.Duration(last-firstEnq).Seconds())
	}
	fmt.Printf("requests: %d accepted, %d busy answers, %d other errors", out.accepted.Load(), out.busy.Load(), out.other.Load())
	if e, ok := out.firstErr.Load().(string); ok {
		fmt.Printf(" (first: %s)", e)
	}
	fmt.Printf("\nwall %v (after the last request: %v until every accepted session was RUNNING)\n",
		elapsed.Round(time.Millisecond), drain.Round(time.Millisecond))
	fmt.Printf("throughput: accepted %s, placed %s, RUNNING %s\n",
		rate(len(accLat), lastAcc), rate(len(schedLat), lastSched), rate(len(runLat), lastRun))
	t.mu.Lock()
	ev := slices.Clone(t.evLat)
	t.mu.Unlock()
	printLat("enqueue→accepted", accLat)
	printLat("enqueue→placed", schedLat)
	printLat("enqueue→RUNNING", runLat)
	printLat("event publish→subscriber", ev)
}

func printLat(what string, d []time.Duration) {
	if len(d) == 0 {
		fmt.Printf("%-26s no samples\n", what)
		return
	}
	slices.Sort(d)
	p := func(q float64) time.Duration {
		i := int(math.Ceil(q*float64(len(d)))) - 1
		return d[max(i, 0)]
	}
	fmt.Printf("%-26s n=%-8d p50 %-9v p90 %-9v p99 %-9v max %v\n", what, len(d),
		rnd(p(0.5)), rnd(p(0.9)), rnd(p(0.99)), rnd(d[len(d)-1]))
}

func rnd(d time.Duration) time.Duration {
	switch {
	case d < time.Millisecond:
		return d.Round(time.Microsecond)
	case d < time.Second:
		return d.Round(10 * time.Microsecond)
	}
	return d.Round(time.Millisecond)
}

// cpuTime is the user and system CPU time of the whole process so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// writeHeap writes a heap profile to path+suffix when path is set. Its
// alloc_space and alloc_objects are counted from the process's start:
// compare with the ".base" profile written before the measured part
// (go tool pprof -sample_index=alloc_space -diff_base P.base P).
func writeHeap(path, suffix string) error {
	if path == "" {
		return nil
	}
	f, err := os.Create(path + suffix)
	if err != nil {
		return err
	}
	err = pprof.WriteHeapProfile(f)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// sessionsTarget is the running bai of -nats-url / -credentials, else a
// new in-process cluster.
func sessionsTarget(ctx context.Context, o options, cfg clusterConfig) (*target, error) {
	if o.external() {
		return externalTarget(ctx, o)
	}
	fmt.Printf("starting NATS, gateway, scheduler, registry and %d sim agents (%d per connection, sim delay %v, state db fsync %v)...\n",
		o.agents, max(o.agentsConn, 1), o.simDelay, !o.simNoSync)
	c, err := startCluster(cfg)
	if err != nil {
		return nil, err
	}
	fmt.Printf("ready in %v\n", c.startTime.Round(time.Millisecond))
	return &target{ak: benchAK, prefix: "b", connect: c.client, stop: c.stop}, nil
}
