package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// The floor: bai's minimal pipeline on the same embedded JetStream server,
// with none of bai's services. A client writes "created" to a log stream
// (file storage, republished to a live subject, as bai's session log) and
// waits for that session's "started" on the live copy; one scheduler
// follows the log's created events and writes a placement to one of N
// agents; one dispatching consumer of the placements hands each to its
// agent's goroutine, which writes "started". Three durable writes a
// session, one republished follow. Whatever bai does above this is its own
// cost: the closed loop prints its figure as a share of this one.

// floorResult is one floor run.
type floorResult struct {
	n       int
	elapsed time.Duration
	cpu     time.Duration
}

func (r floorResult) rate() float64 { return float64(r.n) / r.elapsed.Seconds() }

func (r floorResult) cpuPer() time.Duration {
	if r.n == 0 {
		return 0
	}
	return r.cpu / time.Duration(r.n)
}

func floorScenario(ctx context.Context, o options) error {
	fmt.Printf("floor: %d sessions, %d in flight, %d agents behind one dispatching consumer\n",
		o.sessions, o.concurrency, o.agents)
	r, err := runFloor(ctx, filepath.Join(o.dir, "floor"), o.syncAlways, o.agents, o.sessions, o.concurrency)
	if err != nil {
		return err
	}
	printFloor(r)
	return nil
}

func printFloor(r floorResult) {
	fmt.Printf("bai/floor: %d sessions started in %v: %.0f/s; cpu %.3f ms per session (the whole process)\n",
		r.n, r.elapsed.Round(time.Millisecond), r.rate(), float64(r.cpuPer().Microseconds())/1000)
}

// startNATS starts an embedded NATS server with opts for the scenario
// what; stop shuts it down and waits for it.
func startNATS(what string, opts *natsserver.Options) (ns *natsserver.Server, stop func(), err error) {
	ns, err = natsserver.NewServer(opts)
	if err != nil {
		return nil, nil, err
	}
	go ns.Start()
	stop = func() {
		ns.Shutdown()
		ns.WaitForShutdown()
	}
	if !ns.ReadyForConnections(30 * time.Second) {
		stop()
		return nil, nil, fmt.Errorf("%s: nats did not start", what)
	}
	return ns, stop, nil
}

// runFloor runs the floor's closed loop on a new embedded server in dir.
func runFloor(ctx context.Context, dir string, syncAlways bool, agents, sessions, concurrency int) (floorResult, error) {
	agents = max(agents, 1)
	ns, stop, err := startNATS("floor", &natsserver.Options{
		ServerName: "bai-floor", DontListen: true, NoSigs: true, NoLog: true,
		JetStream: true, StoreDir: filepath.Join(dir, "jetstream"), SyncAlways: syncAlways,
	})
	if err != nil {
		return floorResult{}, err
	}
	defer stop()
	var conns []*nats.Conn
	defer func() {
		for _, nc := range conns {
			nc.Close()
		}
	}()
	connect := func() (*nats.Conn, jetstream.JetStream, error) {
		nc, err := nats.Connect("", nats.InProcessServer(ns))
		if err != nil {
			return nil, nil, err
		}
		conns = append(conns, nc)
		js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(1<<16))
		return nc, js, err
	}
	cnc, cjs, err := connect()
	if err != nil {
		return floorResult{}, err
	}
	if _, err := cjs.CreateStream(ctx, jetstream.StreamConfig{
		Name: "FLOOR", Subjects: []string{"floor.log.>"}, Storage: jetstream.FileStorage,
		Duplicates: 2 * time.Minute,
		RePublish:  &jetstream.RePublish{Source: "floor.log.>", Destination: "floor.live.>"},
	}); err != nil {
		return floorResult{}, err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		failOnce sync.Once
		failed   error
	)
	fail := func(err error) {
		failOnce.Do(func() {
			failed = err
			cancel()
		})
	}

	// The scheduler: follows the created events, places each on the least
	// loaded agent (a scan of all of them, as a real placement would
	// look), writes the placement.
	_, sjs, err := connect()
	if err != nil {
		return floorResult{}, err
	}
	load := make([]int, agents)
	sched, err := sjs.OrderedConsumer(ctx, "FLOOR", jetstream.OrderedConsumerConfig{FilterSubjects: []string{"floor.log.*.created"}})
	if err != nil {
		return floorResult{}, err
	}
	scc, err := sched.Consume(func(m jetstream.Msg) {
		id := strings.Split(m.Subject(), ".")[2]
		best := 0
		for i, l := range load {
			if l < load[best] {
				best = i
			}
		}
		load[best]++
		body := fmt.Appendf(nil, `{"session":%q,"agent":"a%05d","slots":{"cpu":"1","mem":"256m"}}`, id, best)
		if _, err := sjs.PublishAsync(fmt.Sprintf("floor.log.%s.placed.%d", id, best), body,
			jetstream.WithMsgID(id+".placed")); err != nil {
			fail(err)
		}
	})
	if err != nil {
		return floorResult{}, err
	}
	defer scc.Stop()

	// The agents: one dispatching consumer of the placements, one
	// goroutine per agent, which writes "started".
	_, ajs, err := connect()
	if err != nil {
		return floorResult{}, err
	}
	inbox := make([]chan string, agents)
	var agentsWG sync.WaitGroup
	defer agentsWG.Wait()
	defer cancel()
	for a := range inbox {
		inbox[a] = make(chan string, 64)
		agentsWG.Go(func() {
			for {
				select {
				case id := <-inbox[a]:
					body := fmt.Appendf(nil, `{"session":%q,"agent":"a%05d","kernel":"%s-0"}`, id, a, id)
					if _, err := ajs.PublishAsync("floor.log."+id+".started", body, jetstream.WithMsgID(id+".started")); err != nil {
						fail(err)
					}
				case <-ctx.Done():
					return
				}
			}
		})
	}
	disp, err := ajs.OrderedConsumer(ctx, "FLOOR", jetstream.OrderedConsumerConfig{FilterSubjects: []string{"floor.log.*.placed.*"}})
	if err != nil {
		return floorResult{}, err
	}
	dcc, err := disp.Consume(func(m jetstream.Msg) {
		tok := strings.Split(m.Subject(), ".")
		a, err := strconv.Atoi(tok[4])
		if err != nil || a < 0 || a >= agents {
			fail(fmt.Errorf("floor: bad placement %s", m.Subject()))
			return
		}
		select {
		case inbox[a] <- tok[2]:
		case <-ctx.Done():
		}
	})
	if err != nil {
		return floorResult{}, err
	}
	defer dcc.Stop()

	// The client: closed loop on the live copy.
	done := make([]chan struct{}, sessions)
	for i := range done {
		done[i] = make(chan struct{})
	}
	var started atomic.Int64
	sub, err := cnc.Subscribe("floor.live.*.started", func(m *nats.Msg) {
		i, err := strconv.Atoi(strings.Split(m.Subject, ".")[2][1:])
		if err != nil || i < 0 || i >= sessions {
			return
		}
		select {
		case <-done[i]:
		default:
			started.Add(1)
			close(done[i])
		}
	})
	if err != nil {
		return floorResult{}, err
	}
	_ = sub.SetPendingLimits(-1, -1)
	if err := cnc.Flush(); err != nil {
		return floorResult{}, err
	}
	start, cpu0 := time.Now(), cpuTime()
	var next atomic.Int64
	var wg sync.WaitGroup
	for range max(concurrency, 1) {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= sessions || ctx.Err() != nil {
					return
				}
				id := fmt.Sprintf("f%07d", i)
				body := fmt.Appendf(nil, `{"session":%q,"owner":"AKBENCH","image":"python","slots":["cpu=1","mem=256m"]}`, id)
				if _, err := cjs.Publish(ctx, "floor.log."+id+".created", body, jetstream.WithMsgID(id+".created")); err != nil {
					fail(err)
					return
				}
				select {
				case <-done[i]:
				case <-ctx.Done():
					return
				}
			}
		})
	}
	wg.Wait()
	r := floorResult{n: int(started.Load()), elapsed: time.Since(start), cpu: cpuTime() - cpu0}
	failOnce.Do(func() {}) // no failure recorded from here on
	if failed != nil {
		return r, failed
	}
	if r.n < sessions {
		return r, fmt.Errorf("floor: %d of %d sessions started: %w", r.n, sessions, ctx.Err())
	}
	return r, nil
}

// floorAfter runs the floor right after a closed loop, in the same
// process, with the same sessions, concurrency and agents (the closed
// loop's cluster is stopped by then), and prints both side by side.
func floorAfter(ctx context.Context, o options, res closedResult) error {
	fmt.Printf("\nthe floor right after, same process, same settings:\n")
	f, err := runFloor(ctx, filepath.Join(o.dir, "floor"), o.syncAlways, o.agents, o.sessions, o.concurrency)
	if err != nil {
		return err
	}
	printFloor(f)
	if la, err := os.ReadFile("/proc/loadavg"); err == nil {
		fmt.Printf("load average now: %s", la)
	}
	if res.n == 0 || res.elapsed <= 0 {
		return nil
	}
	bai := float64(res.n) / res.elapsed.Seconds()
	cpuPer := res.cpu / time.Duration(res.n)
	fmt.Printf("bai %.0f RUNNING/s vs bai/floor %.0f/s: %.1f%% of the floor; cpu %.3f vs %.3f ms per session (%.1fx)\n",
		bai, f.rate(), 100*bai/f.rate(), float64(cpuPer.Microseconds())/1000,
		float64(f.cpuPer().Microseconds())/1000, float64(cpuPer)/float64(max(f.cpuPer(), 1)))
	return nil
}
