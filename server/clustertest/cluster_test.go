//go:build cluster

// Package clustertest is bai's multi-process fault test (make
// test-cluster): 3 nats-server processes configured by the generator of
// deploy/ (server/natsconf), 2 gateways, 2 schedulers, 2 registries and 3
// agents, each its own process on loopback with its own ports, while
// sessions go through the client package and faults are injected:
//
//   - kill -9 and restart of each NATS node in turn, the session log's
//     stream leader first (found with $JS.API.STREAM.INFO), each time
//     waiting until every stream's replicas are current again;
//   - SIGSTOP of a NATS node past the scheduler's agent timeout, then
//     SIGCONT (a partition simulated: the node's peers and clients see it
//     silent, as behind a cut link, and it comes back with stale state);
//   - kill -9 of the scheduler leader, of an agent with sessions on it and
//     of a registry, each restarted.
//
// Then it checks: every acknowledged create reached a final status; no
// session placed twice; no healthy agent declared lost; both registries
// agree with each other and with the log; the capacity ledger is empty
// when no kernel lives. It prints what it injected and what it found.
package clustertest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/bai-sh/bai/internal/natstest"
	"github.com/bai-sh/bai/pkg/events"
	"github.com/bai-sh/bai/pkg/events/streams"
	"github.com/bai-sh/bai/server/natsconf"
	"github.com/bai-sh/bai/tools/bai/client"
)

const (
	// The scheduler's default: an agent whose NATS node stops answering
	// moves to another node in 2–3 s (svcflags.PingInterval) and beats at
	// once, well within it.
	agentTimeout = 10 * time.Second
	sessionsWant = 240
)

// proc is one process of the cluster, restartable with the same args.
type proc struct {
	name, bin string
	args, env []string
	log       string
	mu        sync.Mutex
	cmd       *exec.Cmd
	// Like systemd's Restart=always: a process that exits on its own is
	// started again after a second, and counted.
	intended bool
	exits    []string
	done     chan struct{} // closed when the current process is reaped
}

func (p *proc) start(t *testing.T) {
	t.Helper()
	f, err := os.OpenFile(p.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(p.bin, p.args...)
	cmd.Env = append(os.Environ(), p.env...)
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", p.name, err)
	}
	f.Close()
	done := make(chan struct{})
	p.mu.Lock()
	p.cmd, p.intended, p.done = cmd, false, done
	p.mu.Unlock()
	go func() {
		err := cmd.Wait()
		close(done)
		p.mu.Lock()
		restart := !p.intended && p.cmd == cmd
		if restart {
			p.exits = append(p.exits, fmt.Sprintf("%s %v", time.Now().Format("15:04:05.000"), err))
		}
		p.mu.Unlock()
		if restart {
			fmt.Printf("supervisor: %s exited on its own (%v); restarting it\n", p.name, err)
			time.Sleep(time.Second)
			p.mu.Lock()
			again := !p.intended && p.cmd == cmd
			p.mu.Unlock()
			if again {
				p.start(t)
			}
		}
	}()
}

func (p *proc) signal(s syscall.Signal) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil && p.cmd.Process != nil {
		_ = p.cmd.Process.Signal(s)
	}
}

func (p *proc) kill() {
	p.mu.Lock()
	p.intended = true
	p.mu.Unlock()
	p.signal(syscall.SIGKILL)
	p.mu.Lock()
	done := p.done
	p.mu.Unlock()
	if done != nil {
		<-done
	}
}

func (p *proc) logText() string {
	b, _ := os.ReadFile(p.log)
	return string(b)
}

type cluster struct {
	dir        string
	spec       natsconf.Spec
	nats       []*proc
	gateways   []*proc
	schedulers []*proc
	registries []*proc
	agents     []*proc
	adminFile  string
	injected   []string
}

func (c *cluster) note(format string, args ...any) {
	line := time.Now().Format("15:04:05.000") + " " + fmt.Sprintf(format, args...)
	c.injected = append(c.injected, line)
	fmt.Println("inject:", line)
}

// build compiles nats-server and the service binaries into dir.
func build(t *testing.T, dir string) {
	pkgs := map[string]string{
		"nats-server":   "github.com/nats-io/nats-server/v2",
		"bai-gateway":   "github.com/bai-sh/bai/services/gateway/cmd/bai-gateway",
		"bai-scheduler": "github.com/bai-sh/bai/services/scheduler/cmd/bai-scheduler",
		"bai-registry":  "github.com/bai-sh/bai/services/registry/cmd/bai-registry",
		"bai-agent":     "github.com/bai-sh/bai/services/agent/cmd/bai-agent",
		"bai-server":    "github.com/bai-sh/bai/server/cmd/bai-server",
		"bai-bench":     "github.com/bai-sh/bai/server/cmd/bai-bench",
	}
	args := []string{"build", "-o", dir + "/"}
	for _, p := range pkgs {
		args = append(args, p)
	}
	cmd := exec.Command("go", args...)
	cmd.Dir = ".."
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
}

func envList(path string, t *testing.T) []string {
	env, err := natsconf.ReadEnv(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for k, v := range env {
		out = append(out, k+"="+v)
	}
	return out
}

// startCluster builds and starts the cluster; agentArgs are added to each
// agent's command line.
func startCluster(t *testing.T, agentArgs ...string) *cluster {
	dir := t.TempDir()
	bin := filepath.Join(dir, "bin")
	build(t, bin)
	c := &cluster{dir: dir, adminFile: filepath.Join(dir, "admin", "credentials.env")}
	ports := natstest.FreePorts(t, 9)
	c.spec = natsconf.Spec{Listen: "127.0.0.1", Sync: "always"}
	if sync := os.Getenv("BAI_CLUSTER_SYNC"); sync != "" {
		c.spec.Sync = sync // sync_interval of the nodes (make bench-cluster)
	}
	for i, n := range natsconf.DefaultNodes(3) {
		n.Host = "127.0.0.1"
		n.ClientPort, n.ClusterPort, n.HTTPPort = ports[3*i], ports[3*i+1], ports[3*i+2]
		n.StoreDir = filepath.Join(dir, n.Name, "jetstream")
		c.spec.Nodes = append(c.spec.Nodes, n)
	}
	files, err := natsconf.Generate(c.spec)
	if err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "conf")
	if err := natsconf.Write(conf, files); err != nil {
		t.Fatal(err)
	}
	secrets := filepath.Join(dir, "secrets")
	if err := natsconf.Secrets(secrets, c.spec); err != nil {
		t.Fatal(err)
	}
	// The logs outlive a failed test.
	logs, err := os.MkdirTemp("", "bai-cluster-logs-")
	if err != nil {
		t.Fatal(err)
	}
	newProc := func(name, b string, env []string, args ...string) *proc {
		return &proc{name: name, bin: filepath.Join(bin, b), args: args, env: env, log: filepath.Join(logs, name+".log")}
	}
	natsEnv := envList(filepath.Join(secrets, natsconf.NATSEnvFile), t)
	for _, n := range c.spec.Nodes {
		p := newProc(n.Name, "nats-server", natsEnv, "-c", filepath.Join(conf, natsconf.NodeFile(n.Name)))
		p.start(t)
		c.nats = append(c.nats, p)
	}
	t.Cleanup(func() {
		for _, group := range [][]*proc{c.agents, c.gateways, c.schedulers, c.registries, c.nats} {
			for _, p := range group {
				p.signal(syscall.SIGCONT)
				p.kill()
			}
		}
		if t.Failed() {
			fmt.Println("logs kept in", logs)
		} else {
			os.RemoveAll(logs)
		}
	})
	seed := filepath.Join(secrets, natsconf.IssuerSeedFile)
	gwEnv := envList(filepath.Join(secrets, "gateway.env"), t)
	public := natsconf.ClientURLs(c.spec, "", "")
	public = strings.ReplaceAll(public, "nats://:@", "nats://")
	for i := range 2 {
		args := []string{"--auth-issuer-seed-file", seed, "--idle-timeout", "-1s"}
		if i == 0 {
			args = append(args, "--bootstrap-admin-file", c.adminFile, "--public-url", public)
		}
		p := newProc("gateway-"+strconv.Itoa(i+1), "bai-gateway", gwEnv, args...)
		p.start(t)
		c.gateways = append(c.gateways, p)
	}
	schEnv := envList(filepath.Join(secrets, "scheduler.env"), t)
	for i := range 2 {
		p := newProc("scheduler-"+strconv.Itoa(i+1), "bai-scheduler", schEnv, "--agent-timeout", agentTimeout.String())
		p.start(t)
		c.schedulers = append(c.schedulers, p)
	}
	for i := 1; i <= 2; i++ {
		user := natsconf.RegistryUser(i)
		p := newProc("registry-"+strconv.Itoa(i), "bai-registry", envList(filepath.Join(secrets, natsconf.ServiceEnvFile(user)), t),
			"--db", filepath.Join(dir, "registry-"+strconv.Itoa(i)+".db"), "--durable", natsconf.RegistryDurable(i))
		p.start(t)
		c.registries = append(c.registries, p)
	}
	for _, id := range natsconf.DefaultAgents(3) {
		p := newProc(id, "bai-agent", envList(filepath.Join(secrets, natsconf.ServiceEnvFile(natsconf.AgentUser(id))), t),
			append([]string{"--id", id, "--data-dir", filepath.Join(dir, id)}, agentArgs...)...)
		p.start(t)
		c.agents = append(c.agents, p)
	}
	return c
}

// ops is a connection as the operators' user (stream info, the log).
func (c *cluster) ops(t *testing.T) *nats.Conn {
	env, err := natsconf.ReadEnv(filepath.Join(c.dir, "secrets", "ops.env"))
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(env["BAI_NATS_URL"], nats.MaxReconnects(-1), nats.ReconnectWait(200*time.Millisecond), nats.RetryOnFailedConnect(true))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

func (c *cluster) client(t *testing.T) *client.Client {
	var cl *client.Client
	waitFor(t, 120*time.Second, func() error {
		creds, err := client.ReadCredentials(c.adminFile)
		if err != nil {
			return err
		}
		cl, err = client.Connect(context.Background(), client.Options{URL: creds.NATSURL, AccessKey: creds.AccessKey, SecretKey: creds.SecretKey,
			Timeout: 10 * time.Second, NATSOptions: []nats.Option{nats.MaxReconnects(-1), nats.ReconnectWait(200 * time.Millisecond)}})
		return err
	})
	t.Cleanup(cl.Close)
	return cl
}

func waitFor(t *testing.T, total time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(total)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %v", total, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// streamLeader is the node leading the session log.
func (c *cluster) streamLeader(t *testing.T, js jetstream.JetStream) string {
	var leader string
	waitFor(t, 60*time.Second, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		s, err := js.Stream(ctx, streams.Sessions)
		if err != nil {
			return err
		}
		info := s.CachedInfo()
		if info.Cluster == nil || info.Cluster.Leader == "" {
			return errors.New("no leader")
		}
		leader = info.Cluster.Leader
		return nil
	})
	return leader
}

// healthy waits until every replica of every stream (the session log,
// the work queue, the output, each bucket) is current again, node (when
// not empty) among them: a restarted node has caught up on all of them.
func (c *cluster) healthy(t *testing.T, js jetstream.JetStream, node string) {
	waitFor(t, 90*time.Second, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		names := js.StreamNames(ctx)
		var n int
		for name := range names.Name() {
			n++
			s, err := js.Stream(ctx, name)
			if err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
			info := s.CachedInfo()
			if info.Cluster == nil || info.Cluster.Leader == "" || len(info.Cluster.Replicas) != 2 {
				return fmt.Errorf("%s: cluster %+v", name, info.Cluster)
			}
			seen := node == "" || info.Cluster.Leader == node
			for _, r := range info.Cluster.Replicas {
				if !r.Current || r.Offline {
					return fmt.Errorf("%s: replica %s not current", name, r.Name)
				}
				seen = seen || r.Name == node
			}
			if !seen {
				return fmt.Errorf("%s: %s is not among its current replicas yet", name, node)
			}
		}
		if err := names.Err(); err != nil {
			return err
		}
		if n < 3 {
			return fmt.Errorf("%d streams", n)
		}
		return nil
	})
}

// up waits until the 3 agents beat and every replica of every stream is
// current.
func (c *cluster) up(t *testing.T, cl *client.Client, js jetstream.JetStream) {
	waitFor(t, 60*time.Second, func() error {
		l, err := cl.ListAgents(context.Background())
		if err != nil {
			return err
		}
		if len(l.Agents) != 3 {
			return fmt.Errorf("%d agents", len(l.Agents))
		}
		return nil
	})
	// A scheduler holds the lease before the load and the faults begin.
	// Set-up requests made while the cluster forms can go unanswered for
	// a whole attempt (10 s) and a scheduler then comes up late; one
	// found no lease 46 s after its start, in a CI run.
	c.waitLeader(t)
	c.healthy(t, js, "")
}

// waitLeader waits until a scheduler has logged lease_acquired, and
// returns it.
func (c *cluster) waitLeader(t *testing.T) *proc {
	var l *proc
	waitFor(t, 120*time.Second, func() error {
		if l = c.schedulerLeader(); l == nil {
			return errors.New("no scheduler logged a lease")
		}
		return nil
	})
	return l
}

func (c *cluster) node(name string) *proc {
	for _, p := range c.nats {
		if p.name == name {
			return p
		}
	}
	return nil
}

// schedulerLeader is the scheduler that logged lease_acquired last.
func (c *cluster) schedulerLeader() *proc {
	var best *proc
	var bestAt string
	for _, p := range c.schedulers {
		for _, line := range strings.Split(p.logText(), "\n") {
			if strings.Contains(line, "lease_acquired") {
				i := strings.Index(line, `"time":"`)
				if i >= 0 && line[i:] > bestAt {
					best, bestAt = p, line[i:]
				}
			}
		}
	}
	return best
}

func TestCluster(t *testing.T) {
	start := time.Now()
	c := startCluster(t, "--no-sandbox")
	nc := c.ops(t)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	cl := c.client(t)
	ctx := context.Background()
	c.up(t, cl, js)
	fmt.Printf("cluster up in %s\n", time.Since(start).Round(time.Millisecond))

	// Load: workers create batch sessions (sleep 1) with their own ids,
	// retrying a create that got no answer with the same id.
	var (
		mu        sync.Mutex
		acked     []string
		refused   atomic.Int64
		retries   atomic.Int64
		next      atomic.Int64
		loadDone  = make(chan struct{})
		workersWG sync.WaitGroup
	)
	for w := range 4 {
		workersWG.Add(1)
		go func() {
			defer workersWG.Done()
			for {
				n := next.Add(1)
				if n > sessionsWant {
					return
				}
				sid := fmt.Sprintf("ct%d-%04d", w, n)
				ok := false
				for attempt := 0; attempt < 120 && !ok; attempt++ {
					cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
					_, err := cl.Create(cctx, events.CreateRequest{SessionID: sid, Image: "python", Type: events.TypeBatch,
						StartupCommand: "sleep 1", Slots: []string{"cpu=0.5", "mem=64m"}})
					cancel()
					switch {
					case err == nil, attempt > 0 && isKnown(err):
						ok = true
					case isRefusal(err):
						refused.Add(1)
						fmt.Println("refused:", sid, err)
						attempt = 120
					default:
						retries.Add(1)
						time.Sleep(500 * time.Millisecond)
					}
				}
				if ok {
					mu.Lock()
					acked = append(acked, sid)
					mu.Unlock()
				}
				time.Sleep(100 * time.Millisecond)
			}
		}()
	}
	go func() { workersWG.Wait(); close(loadDone) }()

	// Faults, one after the other, while the load runs.
	leader := c.streamLeader(t, js)
	order := []string{leader}
	for _, p := range c.nats {
		if p.name != leader {
			order = append(order, p.name)
		}
	}
	for i, name := range order {
		p := c.node(name)
		what := "node"
		if i == 0 {
			what = "session log leader"
		}
		c.note("kill -9 NATS %s (%s)", name, what)
		p.kill()
		time.Sleep(3 * time.Second)
		p.start(t)
		c.note("restarted NATS %s", name)
		c.healthy(t, js, name)
		c.note("every stream current on all replicas again")
	}
	victim := c.nats[1]
	c.note("SIGSTOP NATS %s for %s (agent timeout %s)", victim.name, agentTimeout+4*time.Second, agentTimeout)
	victim.signal(syscall.SIGSTOP)
	time.Sleep(agentTimeout + 4*time.Second)
	victim.signal(syscall.SIGCONT)
	c.note("SIGCONT NATS %s", victim.name)
	c.healthy(t, js, victim.name)

	l := c.waitLeader(t)
	c.note("kill -9 scheduler leader %s", l.name)
	l.kill()
	time.Sleep(2 * time.Second)
	l.start(t)
	c.note("restarted %s", l.name)

	var busy *proc
	waitFor(t, 60*time.Second, func() error {
		l, err := cl.ListAgents(ctx)
		if err != nil {
			return err
		}
		for _, a := range l.Agents {
			if a.Sessions > 0 {
				for _, p := range c.agents {
					if p.name == a.ID {
						busy = p
						return nil
					}
				}
			}
		}
		return errors.New("no agent holds a session")
	})
	c.note("kill -9 agent %s (it holds sessions)", busy.name)
	busy.kill()
	time.Sleep(2 * time.Second)
	busy.start(t)
	c.note("restarted agent %s", busy.name)

	c.note("kill -9 %s", c.registries[0].name)
	c.registries[0].kill()
	time.Sleep(2 * time.Second)
	c.registries[0].start(t)
	c.note("restarted %s", c.registries[0].name)

	<-loadDone
	c.note("load done: %d acknowledged, %d refused, %d create retries", len(acked), refused.Load(), retries.Load())

	// Every acknowledged create reaches a final status.
	final := map[string]events.Status{}
	waitFor(t, 5*time.Minute, func() error {
		pending := 0
		for _, sid := range acked {
			if _, ok := final[sid]; ok {
				continue
			}
			info, err := cl.Get(ctx, sid)
			if err != nil || !info.Status.Final() {
				pending++
				continue
			}
			final[sid] = info.Status
		}
		if pending > 0 {
			return fmt.Errorf("%d of %d acknowledged sessions not final", pending, len(acked))
		}
		return nil
	})

	found := c.checkLog(t, js, acked, busy.name)
	c.checkRegistries(t, cl, acked, found.status)
	c.checkLedger(t, cl)

	counts := map[events.Status]int{}
	for _, s := range final {
		counts[s]++
	}
	fmt.Println("\n== injected")
	for _, l := range c.injected {
		fmt.Println("  " + l)
	}
	fmt.Println("== found")
	fmt.Printf("  acknowledged creates: %d (refused %d, retried %d); final: %v\n", len(acked), refused.Load(), retries.Load(), counts)
	fmt.Printf("  placements: %d, placed twice: %d; agent-lost: %v\n", found.placed, found.twice, found.lost)
	fmt.Printf("  registries agree with each other and the log on %d sessions; ledger empty\n", len(acked))
	for _, group := range [][]*proc{c.nats, c.gateways, c.schedulers, c.registries, c.agents} {
		for _, p := range group {
			p.mu.Lock()
			if len(p.exits) > 0 {
				fmt.Printf("  %s exited on its own %d times (restarted as systemd would): %v\n", p.name, len(p.exits), p.exits)
			}
			p.mu.Unlock()
		}
	}
	fmt.Printf("  total %s\n", time.Since(start).Round(time.Second))
	if len(acked) < sessionsWant*9/10 {
		t.Errorf("only %d of %d creates acknowledged", len(acked), sessionsWant)
	}
}

// isRefusal: the request itself is refused (retrying cannot help). A
// quota (429), busy (503) or internal (500) answer, or none, is retried.
func isRefusal(err error) bool {
	var ae *events.APIError
	if !errors.As(err, &ae) {
		return false
	}
	switch ae.Code {
	case events.CodeInvalid, events.CodeUnauthorized, events.CodeForbidden, events.CodeNotFound:
		return true
	}
	return false
}

// isKnown: a retried create whose first attempt was stored after all.
func isKnown(err error) bool {
	var ae *events.APIError
	return errors.As(err, &ae) && ae.Code == events.CodeConflict
}

type logFound struct {
	status map[string]events.Status
	placed int
	twice  int
	lost   map[string]int // agent id → sessions declared lost on it
}

// checkLog reads the whole session log: each session's status folded as
// the projections fold it; one placement per session; agent-lost only on
// the agent that was killed.
func (c *cluster) checkLog(t *testing.T, js jetstream.JetStream, acked []string, killed string) logFound {
	var found logFound
	var placements map[string]int
	waitFor(t, 2*time.Minute, func() error {
		found = logFound{status: map[string]events.Status{}, lost: map[string]int{}}
		placements = map[string]int{}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		s, err := js.Stream(ctx, streams.Sessions)
		if err != nil {
			return err
		}
		st := s.CachedInfo().State
		// One message get per sequence: simple, and each retried alone.
		for seq := st.FirstSeq; seq <= st.LastSeq; seq++ {
			m, err := s.GetMsg(ctx, seq)
			if errors.Is(err, jetstream.ErrMsgNotFound) {
				continue
			}
			if err != nil {
				return fmt.Errorf("read the log at %d: %w", seq, err)
			}
			e, err := events.Decode(m.Subject, m.Data)
			if err != nil {
				continue
			}
			if e.Name == events.EventScheduled {
				placements[e.SessionID]++
				found.placed++
			}
			if e.Reason == events.ReasonAgentLost {
				found.lost[e.AgentID]++
			}
			cur := found.status[e.SessionID]
			if st := e.Status(); cur == events.StatusNone && st != events.StatusNone {
				found.status[e.SessionID] = st
			} else if to, moved := events.Advance(cur, e); moved {
				found.status[e.SessionID] = to // through a folded start's steps
			}
		}
		return nil
	})
	for sid, n := range placements {
		if n > 1 {
			found.twice++
			t.Errorf("session %s placed %d times", sid, n)
		}
	}
	for id, n := range found.lost {
		if id != killed {
			t.Errorf("healthy agent %q declared lost (%d sessions)", id, n)
		}
	}
	for _, sid := range acked {
		if !found.status[sid].Final() {
			t.Errorf("acknowledged session %s is %s in the log", sid, found.status[sid])
		}
	}
	return found
}

// checkRegistries asks each registry alone (the other stopped) for every
// session and compares with the log.
func (c *cluster) checkRegistries(t *testing.T, cl *client.Client, acked []string, log map[string]events.Status) {
	views := make([]map[string]events.Status, len(c.registries))
	for i := range c.registries {
		for j, p := range c.registries {
			if j != i {
				p.mu.Lock()
				p.intended = true
				p.mu.Unlock()
				p.signal(syscall.SIGTERM)
			}
		}
		time.Sleep(time.Second)
		view := map[string]events.Status{}
		waitFor(t, 60*time.Second, func() error {
			for _, sid := range acked {
				if _, ok := view[sid]; ok {
					continue
				}
				info, err := cl.Get(context.Background(), sid)
				if err != nil {
					return fmt.Errorf("%s from %s: %w", sid, c.registries[i].name, err)
				}
				view[sid] = info.Status
			}
			return nil
		})
		views[i] = view
		for j, p := range c.registries {
			if j != i {
				p.kill()
				p.start(t)
			}
		}
	}
	for _, sid := range acked {
		if views[0][sid] != views[1][sid] || views[0][sid] != log[sid] {
			t.Errorf("session %s: registry-1 %s, registry-2 %s, log %s", sid, views[0][sid], views[1][sid], log[sid])
		}
	}
}

// checkLedger: with every session final, the scheduler's ledger holds
// nothing on any agent.
func (c *cluster) checkLedger(t *testing.T, cl *client.Client) {
	waitFor(t, 60*time.Second, func() error {
		l, err := cl.ListAgents(context.Background())
		if err != nil {
			return err
		}
		if !l.Ledger {
			return errors.New("no scheduler answered the ledger")
		}
		for _, a := range l.Agents {
			if a.Sessions != 0 {
				return fmt.Errorf("agent %s: ledger holds %d sessions (%v) with no live kernel", a.ID, a.Sessions, a.Used)
			}
			if a.State != "ready" && a.State != "draining" {
				return fmt.Errorf("agent %s is %s", a.ID, a.State)
			}
		}
		return nil
	})
}
