// Command bai-bench measures bai end to end in one process: an embedded
// NATS server with JetStream on disk, the real gateway, scheduler and
// registry, and N agents on the sim runtime (kernels that pass through the
// real lifecycle and do no work). Sessions go through the real API
// subjects with the real client package.
//
// Scenarios (-scenario):
//
//	closed  C clients each create a session and wait for it to be RUNNING, M in all
//	open    sessions created at a target rate (-rate) for M sessions; latency from the intended send time
//	flood   open loop far beyond capacity: counts busy answers and errors, then waits for the backlog
//	ps      the registry holds -ps-sessions sessions; times the first page of ps (List, limit 10)
//	floor   bai's minimal pipeline on the same embedded JetStream server, no bai services (see floor.go)
//	batch   N real batch sessions (/bin/true, process runtime, sandboxed, a real agent): completed/s
//	runpath one execution's agent side in parts: bare, unsandboxed, the sandbox's cost, parts of its set-up left out
//	cli     bai run --rm -c 'print(1)' python against a real all-in-one server.Server, vs bare python3
//	pings   what the services' NATS keep-alive costs: -agents idle connections, the services' ping vs nats.go's default
//
// With -nats-url or -credentials, closed, open and flood drive a bai that
// runs elsewhere instead (a bai-server, or a NATS cluster with each service
// its own process: make bench-cluster), through the same client package.
//
// Every service shares this one process: the peak RSS it prints is theirs
// together, NATS included.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/pprof"
	"runtime/trace"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/bai-sh/bai/services/agent"
)

type options struct {
	scenario    string
	agents      int
	agentsConn  int
	sessions    int
	concurrency int
	rate        float64
	syncAlways  bool
	dir         string
	psSessions  int
	psQueries   int
	cliRuns     int
	baiBin      string
	cpuProfile  string
	tracePath   string
	memProfile  string
	simDelay    time.Duration
	simNoSync   bool
	timeout     time.Duration
	verbose     bool
	noFloor     bool
	natsURL     string
	credentials string
	slots       string
	pingWindow  time.Duration
}

func main() {
	var o options
	flag.StringVar(&o.scenario, "scenario", "closed", "closed, open, flood, floor, batch, runpath, ps, cli or pings")
	flag.IntVar(&o.agents, "agents", 1000, "sim agents")
	flag.IntVar(&o.agentsConn, "agents-per-conn", 1, "sim agents sharing one NATS connection")
	flag.IntVar(&o.sessions, "sessions", 20000, "sessions to create")
	flag.IntVar(&o.concurrency, "concurrency", 256, "closed loop: sessions in flight")
	flag.Float64Var(&o.rate, "rate", 1000, "open loop: sessions per second (flood: the flood's rate)")
	flag.BoolVar(&o.syncAlways, "sync-always", false, "JetStream sync_interval: always (fsync every write)")
	flag.StringVar(&o.dir, "dir", "", "data directory (default: a new temporary one, removed at the end)")
	flag.IntVar(&o.psSessions, "ps-sessions", 1000000, "ps: sessions in the registry")
	flag.IntVar(&o.psQueries, "ps-queries", 1000, "ps: first-page queries timed")
	flag.IntVar(&o.cliRuns, "cli-runs", 30, "cli: runs of each command")
	flag.StringVar(&o.baiBin, "bai", "", "cli: the bai binary (default: bai next to this one)")
	flag.StringVar(&o.cpuProfile, "cpuprofile", "", "write a CPU profile of the measured part to this file")
	flag.StringVar(&o.memProfile, "memprofile", "", "ps: write a heap profile after the fill to this file; closed, open, flood: one before the measured part (FILE.base) and one after")
	flag.StringVar(&o.tracePath, "trace", "", "write an execution trace of the measured part to this file (go tool trace -pprof=sync|sched|net)")
	flag.DurationVar(&o.simDelay, "sim-delay", 0, "sim runtime: delay of Prepare and of Create each")
	flag.BoolVar(&o.simNoSync, "sim-nosync", false, "sim agents write their state dbs without fsync (real agents fsync on their own hosts; not crash safe)")
	flag.DurationVar(&o.timeout, "timeout", 5*time.Minute, "give up after this long")
	flag.BoolVar(&o.noFloor, "no-floor", false, "closed: do not run the floor (bai/floor) after the closed loop")
	flag.BoolVar(&o.verbose, "v", false, "log the services' warnings to stderr")
	flag.StringVar(&o.natsURL, "nats-url", "", "closed, open, flood: drive a running bai at these NATS URLs (comma-separated; a one-process bai-server or a cluster) instead of one started in this process; the key comes from -credentials or BAI_ACCESS_KEY/BAI_SECRET_KEY")
	flag.StringVar(&o.credentials, "credentials", "", "closed, open, flood: a bai credentials file (URL, access key, secret key) of a running bai to drive; -nats-url overrides its URL")
	flag.StringVar(&o.slots, "slots", "", "closed, open, flood: each session's slots, comma-separated (default cpu=1,mem=256m; against a running bai cpu=0.1,mem=64m, and each session is removed once RUNNING)")
	flag.DurationVar(&o.pingWindow, "ping-window", 10*time.Second, "pings: how long the idle connections are measured, each way")
	flag.Parse()
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "bai-bench:", err)
		os.Exit(1)
	}
}

func run(o options) error {
	if o.dir == "" {
		d, err := os.MkdirTemp("", "bai-bench-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(d)
		o.dir = d
	}
	// The services' warnings are counted (and shown with -v): a run that
	// stalled says why.
	var out io.Writer = warnings
	if o.verbose {
		out = zerolog.MultiLevelWriter(warnings, zerolog.ConsoleWriter{Out: os.Stderr})
	}
	log := zerolog.New(out).Level(zerolog.WarnLevel)
	external := o.external()
	sync := "NATS default (sync_interval 2m)"
	switch {
	case external && o.scenario != "closed" && o.scenario != "open" && o.scenario != "flood":
		return fmt.Errorf("-nats-url and -credentials drive a running bai in the closed, open and flood scenarios, not %q", o.scenario)
	case external && o.syncAlways:
		return errors.New("-sync-always sets up the bench's own NATS; a running bai's is set in its config (sync_interval)")
	case external:
		sync = "the running bai's"
	case o.syncAlways:
		sync = "sync_interval: always"
	}
	fmt.Printf("bai-bench scenario=%s sync=%q cpus=%d GOMAXPROCS=%d go=%s\n", o.scenario, sync,
		runtime.NumCPU(), runtime.GOMAXPROCS(0), runtime.Version())
	fmt.Printf("command: %s\n", strings.Join(os.Args, " "))
	if la, err := os.ReadFile("/proc/loadavg"); err == nil {
		fmt.Printf("load average at start: %s", la)
	}
	cfg := clusterConfig{
		dir: o.dir, syncAlways: o.syncAlways, agents: o.agents, agentsConn: o.agentsConn, log: log,
		sim: agent.SimConfig{PrepareDelay: o.simDelay, CreateDelay: o.simDelay, StateNoSync: o.simNoSync},
	}
	ctx, cancel := context.WithTimeout(context.Background(), o.timeout)
	defer cancel()
	var err error
	switch o.scenario {
	case "closed", "open", "flood":
		var res closedResult
		err = sessionsScenario(ctx, o, cfg, &res)
		if err == nil && o.scenario == "closed" && !o.noFloor && !external {
			err = floorAfter(ctx, o, res)
		}
	case "floor":
		err = floorScenario(ctx, o)
	case "batch":
		err = batchScenario(ctx, o)
	case "runpath":
		err = runpathScenario(ctx, o)
	case "ps":
		cfg.agents = 0
		err = psScenario(ctx, o, cfg)
	case "cli":
		err = cliScenario(ctx, o)
	case "pings":
		err = pingsScenario(ctx, o)
	default:
		err = fmt.Errorf("unknown scenario %q", o.scenario)
	}
	rss, hwm := memStatus()
	whose := "every service, NATS and the bench share this one process"
	if external {
		whose = "the bench's process only"
	}
	fmt.Printf("process RSS now %s, peak (VmHWM) %s: %s\n", mib(rss), mib(hwm), whose)
	return err
}

// profile starts a CPU profile and an execution trace where asked; the
// returned func stops them.
func profile(o options) (func(), error) {
	var stops []func()
	stop := func() {
		for _, f := range stops {
			f()
		}
	}
	start := func(path string, begin func(io.Writer) error, end func()) error {
		if path == "" {
			return nil
		}
		f, err := os.Create(path)
		if err != nil {
			return err
		}
		if err := begin(f); err != nil {
			f.Close()
			return err
		}
		stops = append(stops, func() {
			end()
			f.Close()
		})
		return nil
	}
	if err := start(o.cpuProfile, pprof.StartCPUProfile, pprof.StopCPUProfile); err != nil {
		return nil, err
	}
	if err := start(o.tracePath, trace.Start, trace.Stop); err != nil {
		stop()
		return nil, err
	}
	return stop, nil
}

// memStatus is VmRSS and VmHWM of this process, in bytes.
func memStatus() (rss, hwm uint64) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		var kb uint64
		switch {
		case strings.HasPrefix(line, "VmRSS:"):
			fmt.Sscanf(strings.TrimPrefix(line, "VmRSS:"), "%d", &kb)
			rss = kb << 10
		case strings.HasPrefix(line, "VmHWM:"):
			fmt.Sscanf(strings.TrimPrefix(line, "VmHWM:"), "%d", &kb)
			hwm = kb << 10
		}
	}
	return rss, hwm
}

func mib(b uint64) string { return fmt.Sprintf("%.0f MiB", float64(b)/(1<<20)) }

// warnings counts the services' warnings and keeps the first few.
var warnings = &warnCounter{}

type warnCounter struct {
	mu    sync.Mutex
	n     int
	first []string
}

func (w *warnCounter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.n++
	if len(w.first) < 3 {
		w.first = append(w.first, strings.TrimSpace(string(p)))
	}
	return len(p), nil
}

// report prints how many warnings the services logged so far, if any.
func (w *warnCounter) report() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.n == 0 {
		return
	}
	fmt.Printf("the services logged %d warnings (-v shows them); the first:\n", w.n)
	for _, l := range w.first {
		fmt.Printf("  %s\n", l)
	}
}
