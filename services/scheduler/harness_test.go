package scheduler

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
	"github.com/rs/zerolog"

	"github.com/bai-sh/bai/internal/natstest"
	"github.com/bai-sh/bai/pkg/events"
	"github.com/bai-sh/bai/pkg/events/streams"
	"github.com/bai-sh/bai/pkg/slots"
)

// cluster is a real NATS server with JetStream on disk, any number of
// real scheduler instances, stand-in agents that publish real events,
// and an observer that checks the invariants on every event of the log,
// in log order.
type cluster struct {
	t  testing.TB
	ns *server.Server
	nc *nats.Conn
	js jetstream.JetStream

	obs *observer

	mu     sync.Mutex
	agents map[string]*simAgent
	// kernels counts, per session, the agents running a kernel for it now.
	kernels map[string]int
}

func newCluster(t testing.TB) *cluster {
	t.Helper()
	ns := natstest.RunServer(t)
	nc := natstest.Connect(t, ns)
	js, _ := jetstream.New(nc)
	if err := streams.Provision(context.Background(), js, streams.Options{}); err != nil {
		t.Fatal(err)
	}
	c := &cluster{t: t, ns: ns, nc: nc, js: js, agents: map[string]*simAgent{}, kernels: map[string]int{}}
	c.obs = newObserver(t, js)
	return c
}

// sched is one scheduler instance that can be stopped cleanly or crashed.
type sched struct {
	svc    *Service
	nc     *nats.Conn
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
}

func (c *cluster) scheduler(cfg Config) *sched {
	c.t.Helper()
	nc := natstest.Connect(c.t, c.ns)
	cfg.NC = nc
	if cfg.Tick == 0 {
		cfg.Tick = 20 * time.Millisecond
	}
	if cfg.AgentTimeout == 0 {
		cfg.AgentTimeout = 5 * time.Second
	}
	cfg.Log = zerolog.New(zerolog.NewTestWriter(c.t)).Level(zerolog.WarnLevel)
	svc, err := New(cfg)
	if err != nil {
		c.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &sched{svc: svc, nc: nc, cancel: cancel, done: make(chan error, 1)}
	go func() { s.done <- svc.Run(ctx) }()
	c.t.Cleanup(s.stop)
	select {
	case <-svc.Ready():
	case <-time.After(20 * time.Second):
		c.t.Fatal("scheduler not ready")
	}
	return s
}

// stop ends the instance cleanly (it releases its lease).
func (s *sched) stop() {
	s.once.Do(func() {
		s.cancel()
		<-s.done
		s.nc.Close()
	})
}

// crash ends the instance as a kill would: the connection goes first, so
// nothing more is published and the lease is not released.
func (s *sched) crash() {
	s.once.Do(func() {
		s.nc.Close()
		s.cancel()
		<-s.done
	})
}

// enqueue publishes a session_enqueued as the gateway would.
func (c *cluster) enqueue(ak, sid string, slotMap map[string]string, mod func(*events.SessionSpec)) {
	c.t.Helper()
	sp := &events.SessionSpec{ID: sid, AccessKey: ak, Image: "python:3.11", Slots: slotMap,
		ScalingGroup: "default", MainKernelID: "k-" + sid, CreatedAt: time.Now().UTC(), Type: events.TypeInteractive}
	if mod != nil {
		mod(sp)
	}
	c.publish(&events.Event{Name: events.EventEnqueued, AccessKey: ak, SessionID: sid, KernelID: sp.MainKernelID, Session: sp})
}

// enqueueAsync publishes many enqueues without waiting for each ack.
func (c *cluster) enqueueAsync(ak string, sids []string, slotMap map[string]string) {
	c.t.Helper()
	for i, sid := range sids {
		if i%500 == 499 {
			select {
			case <-c.js.PublishAsyncComplete():
			case <-time.After(60 * time.Second):
				c.t.Fatal("async enqueues not acknowledged")
			}
		}
		sp := &events.SessionSpec{ID: sid, AccessKey: ak, Image: "python:3.11", Slots: slotMap,
			ScalingGroup: "default", MainKernelID: "k-" + sid, Type: events.TypeInteractive}
		ev := &events.Event{V: events.Version, ID: nuid.Next(), Time: time.Now().UTC(), Name: events.EventEnqueued, AccessKey: ak, SessionID: sid, Session: sp}
		subj, _ := events.EventSubject(ev)
		data, _ := json.Marshal(ev)
		if _, err := c.js.PublishAsync(subj, data, jetstream.WithMsgID(ev.ID)); err != nil {
			c.t.Fatal(err)
		}
	}
	select {
	case <-c.js.PublishAsyncComplete():
	case <-time.After(60 * time.Second):
		c.t.Fatal("async enqueues not acknowledged")
	}
}

func (c *cluster) publish(ev *events.Event) {
	c.t.Helper()
	if err := publishOn(c.js, ev); err != nil {
		c.t.Fatal(err)
	}
}

func publishOn(js jetstream.JetStream, ev *events.Event) error {
	ev.V, ev.Time = events.Version, time.Now().UTC()
	if ev.ID == "" {
		ev.ID = nuid.Next()
	}
	subj, err := events.EventSubject(ev)
	if err != nil {
		return err
	}
	data, _ := json.Marshal(ev)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err = js.Publish(ctx, subj, data, jetstream.WithMsgID(ev.ID))
	return err
}

// observer folds the log, in order, into what each session and agent is,
// and fails the test on a double placement or an over-commit at any
// instant of the log.
type observer struct {
	t  testing.TB
	mu sync.Mutex

	capacity map[string]slots.Set // agent → capacity, set by the test
	used     map[string]slots.Set
	sessions map[string]*obsSession
	events   []*events.Event
	maxUsed  map[string]slots.Set
}

type obsSession struct {
	slots     slots.Set
	status    events.Status
	agent     string
	placed    int
	reason    events.Reason
	info      []events.Reason
	placedSeq uint64
	enqSeq    uint64
	lastSeq   uint64 // of its last event on the log
}

func newObserver(t testing.TB, js jetstream.JetStream) *observer {
	o := &observer{t: t, capacity: map[string]slots.Set{}, used: map[string]slots.Set{}, sessions: map[string]*obsSession{}, maxUsed: map[string]slots.Set{}}
	cons, err := js.OrderedConsumer(context.Background(), streams.Sessions, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{events.AllSessionsFilter},
	})
	if err != nil {
		t.Fatal(err)
	}
	cc, err := cons.Consume(func(m jetstream.Msg) {
		ev, err := events.Decode(m.Subject(), m.Data())
		if err != nil {
			t.Errorf("bad event on the log: %v", err)
			return
		}
		md, _ := m.Metadata()
		o.apply(ev, md.Sequence.Stream)
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cc.Stop)
	return o
}

func (o *observer) setCapacity(agent string, capacity map[string]string) {
	set, err := slots.ParseMap(capacity)
	if err != nil {
		o.t.Fatal(err)
	}
	o.mu.Lock()
	o.capacity[agent] = set
	o.mu.Unlock()
}

func (o *observer) apply(ev *events.Event, seq uint64) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.events = append(o.events, ev)
	s := o.sessions[ev.SessionID]
	if ev.Name == events.EventEnqueued {
		if s == nil {
			req, _ := slots.ParseMap(ev.Session.Slots)
			o.sessions[ev.SessionID] = &obsSession{slots: req, status: events.StatusPending, enqSeq: seq}
		}
		return
	}
	if s == nil {
		return
	}
	s.lastSeq = max(s.lastSeq, seq)
	if ev.Name == events.EventPendingInfo {
		s.info = append(s.info, ev.Reason)
	}
	if ev.Name == events.EventScheduled && s.status.Final() {
		// A late placement of an ended session: its agent is ordered to
		// drop it; it holds nothing in the ledger.
		return
	}
	to, moved := events.Advance(s.status, ev)
	if !moved {
		return
	}
	from := s.status
	s.status = to
	if ev.Reason != "" {
		s.reason = ev.Reason
	}
	if to == events.StatusScheduled {
		s.placed++
		if s.placed > 1 {
			o.t.Errorf("session %s placed twice", ev.SessionID)
		}
		s.agent = ev.AgentID
		s.placedSeq = seq
		u, _ := o.used[ev.AgentID].Add(s.slots)
		if u == nil {
			u = slots.Set{}
		}
		o.used[ev.AgentID] = u
		if c, ok := o.capacity[ev.AgentID]; ok && !u.Fits(c) {
			o.t.Errorf("over-commit on %s at seq %d: %s placed, capacity %s", ev.AgentID, seq, u, c)
		}
		if m := o.maxUsed[ev.AgentID]; m == nil || freeScore(c0(o.capacity[ev.AgentID]), u) < freeScore(c0(o.capacity[ev.AgentID]), m) {
			o.maxUsed[ev.AgentID] = u.Clone()
		}
	}
	if to.Final() && from.HoldsCapacity() && s.agent != "" {
		u, err := o.used[s.agent].Sub(s.slots)
		if err != nil {
			o.t.Errorf("release below zero on %s: %v", s.agent, err)
		}
		o.used[s.agent] = u
	}
}

func c0(s slots.Set) slots.Set {
	if s == nil {
		return slots.Set{}
	}
	return s
}

// count returns how many sessions are in each status.
func (o *observer) count() map[events.Status]int {
	o.mu.Lock()
	defer o.mu.Unlock()
	out := map[events.Status]int{}
	for _, s := range o.sessions {
		out[s.status]++
	}
	return out
}

func (o *observer) session(sid string) obsSession {
	o.mu.Lock()
	defer o.mu.Unlock()
	if s := o.sessions[sid]; s != nil {
		return *s
	}
	return obsSession{}
}

// waitStatus waits until every listed session is in status.
func (c *cluster) waitStatus(d time.Duration, st events.Status, sids ...string) {
	c.t.Helper()
	natstest.CheckFor(c.t, d, 10*time.Millisecond, func() error {
		for _, sid := range sids {
			if got := c.obs.session(sid).status; got != st {
				return fmt.Errorf("session %s is %s, want %s", sid, got, st)
			}
		}
		return nil
	})
}

// waitCounts waits until the status counts are want (statuses not in want
// must be absent).
func (c *cluster) waitCounts(d time.Duration, want map[events.Status]int) {
	c.t.Helper()
	natstest.CheckFor(c.t, d, 10*time.Millisecond, func() error {
		got := c.obs.count()
		for st, n := range got {
			if want[st] != n {
				return fmt.Errorf("statuses %v, want %v", got, want)
			}
		}
		for st, n := range want {
			if got[st] != n {
				return fmt.Errorf("statuses %v, want %v", got, want)
			}
		}
		return nil
	})
}

// simAgent stands in for an agent: it heartbeats in the agents bucket and
// consumes its work through a durable consumer, publishing the lifecycle
// events a real agent publishes. It runs no process; a "kernel" is an
// entry in its running set.
type simAgent struct {
	c        *cluster
	id       string
	epoch    uint64
	group    string
	capacity map[string]string
	// runFor: a kernel ends by itself (session_terminated, task-finished)
	// after it; 0: it runs until terminated.
	runFor time.Duration
	// stallAt: the agent stops reacting after publishing this status's
	// event for a placement ("" for never).
	stallAt events.Name
	// ignoreTerminate: terminating orders are acknowledged and ignored.
	ignoreTerminate bool
	ackWait         time.Duration
	// dup: every event is published twice, with different ids.
	dup bool
	// skipAcks: each work message is left unacknowledged this many times
	// (redelivered), then handled.
	skipAcks int

	nc      *nats.Conn
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	mu      sync.Mutex
	running map[string]bool // session ids with a live kernel here
	seen    map[string]int  // deliveries per message id
}

func (c *cluster) agent(id string, capacity map[string]string, mod func(*simAgent)) *simAgent {
	c.t.Helper()
	a := &simAgent{c: c, id: id, epoch: 1, group: "default", capacity: capacity, running: map[string]bool{}, seen: map[string]int{}, ackWait: 5 * time.Second}
	if mod != nil {
		mod(a)
	}
	c.obs.setCapacity(id, capacity)
	c.mu.Lock()
	c.agents[id] = a
	c.mu.Unlock()
	a.start()
	c.t.Cleanup(a.stop)
	return a
}

func (a *simAgent) start() {
	t := a.c.t
	a.nc = natstest.Connect(t, a.c.ns)
	js, _ := jetstream.New(a.nc)
	ctx, cancel := context.WithCancel(context.Background())
	a.cancel = cancel
	filter, _ := events.AgentWorkFilter(a.id)
	cons, err := js.CreateOrUpdateConsumer(ctx, streams.Sessions, jetstream.ConsumerConfig{
		Durable: "sim-" + a.id, FilterSubject: filter, AckPolicy: jetstream.AckExplicitPolicy,
		AckWait: a.ackWait, MaxAckPending: 1,
	})
	if err != nil {
		t.Fatal(err)
	}
	kv, err := js.KeyValue(ctx, streams.Agents)
	if err != nil {
		t.Fatal(err)
	}
	beat := func() {
		data, _ := json.Marshal(events.AgentInfo{V: 1, ID: a.id, Epoch: a.epoch, ScalingGroup: a.group, Capacity: a.capacity, Heartbeat: time.Now().UTC()})
		_, _ = kv.Put(ctx, a.id, data)
	}
	beat()
	a.wg.Add(2)
	go func() {
		defer a.wg.Done()
		tk := time.NewTicker(50 * time.Millisecond)
		defer tk.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tk.C:
				beat()
			}
		}
	}()
	go func() {
		defer a.wg.Done()
		it, err := cons.Messages()
		if err != nil {
			return
		}
		context.AfterFunc(ctx, it.Stop)
		for {
			m, err := it.Next()
			if err != nil {
				return
			}
			a.handle(ctx, js, m)
		}
	}()
}

// stop ends the agent (kill -9 or a partition: nothing more is published,
// the heartbeat goes stale, the running set survives for a heal).
func (a *simAgent) stop() {
	if a.cancel != nil {
		a.cancel()
		a.wg.Wait()
		a.nc.Close()
		a.cancel = nil
	}
}

func (a *simAgent) handle(ctx context.Context, js jetstream.JetStream, m jetstream.Msg) {
	ev, err := events.Decode(m.Subject(), m.Data())
	if err != nil {
		_ = m.Term()
		return
	}
	a.mu.Lock()
	a.seen[ev.ID]++
	n := a.seen[ev.ID]
	a.mu.Unlock()
	if n <= a.skipAcks {
		return // left unacknowledged: redelivered after AckWait
	}
	pub := func(name events.Name, reason events.Reason) bool {
		e := &events.Event{Name: name, AccessKey: ev.AccessKey, SessionID: ev.SessionID, KernelID: ev.KernelID, AgentID: a.id, AgentEpoch: a.epoch, Reason: reason}
		if a.dup {
			again := *e
			if publishOn(js, &again) != nil {
				return false
			}
		}
		return publishOn(js, e) == nil
	}
	switch ev.Name {
	case events.EventScheduled:
		a.mu.Lock()
		dup := a.running[ev.SessionID] || a.seen["done-"+ev.SessionID] > 0
		if !dup {
			a.running[ev.SessionID] = true
			a.c.kernelUp(ev.SessionID)
		}
		a.mu.Unlock()
		if dup {
			break
		}
		for _, n := range []events.Name{events.EventPreparing, events.EventPrepared, events.EventCreating, events.EventStarted} {
			if !pub(n, "") {
				return
			}
			a.mu.Lock()
			stall := a.stallAt
			a.mu.Unlock()
			if n == stall {
				_ = m.Ack()
				<-ctx.Done()
				return
			}
		}
		if a.runFor > 0 {
			sid := ev.SessionID
			time.AfterFunc(a.runFor, func() {
				if ctx.Err() != nil {
					return
				}
				if a.drop(sid) {
					e := &events.Event{Name: events.EventTerminated, AccessKey: ev.AccessKey, SessionID: sid, KernelID: ev.KernelID, AgentID: a.id, AgentEpoch: a.epoch, Reason: events.ReasonTaskFinished}
					_ = publishOn(js, e)
				}
			})
		}
	case events.EventTerminating:
		if a.ignoreTerminate {
			break
		}
		a.drop(ev.SessionID)
		if !pub(events.EventTerminated, ev.Reason) {
			return
		}
	case events.EventCancelled:
		a.drop(ev.SessionID)
	}
	_ = m.Ack()
}

// drop kills the kernel of sid, reporting whether there was one.
func (a *simAgent) drop(sid string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.seen["done-"+sid]++
	if !a.running[sid] {
		return false
	}
	delete(a.running, sid)
	a.c.kernelDown(sid)
	return true
}

func (a *simAgent) setStall(n events.Name) {
	a.mu.Lock()
	a.stallAt = n
	a.mu.Unlock()
}

func (a *simAgent) runningCount() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.running)
}

func (c *cluster) kernelUp(sid string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.kernels[sid]++
	if c.kernels[sid] > 1 {
		c.t.Errorf("two kernels for session %s", sid)
	}
}

func (c *cluster) kernelDown(sid string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.kernels[sid]--
}

// liveKernels sums, per agent, the slots of the kernels it runs.
func (c *cluster) liveKernels() map[string]string {
	c.mu.Lock()
	agents := make([]*simAgent, 0, len(c.agents))
	for _, a := range c.agents {
		agents = append(agents, a)
	}
	c.mu.Unlock()
	out := map[string]string{}
	for _, a := range agents {
		a.mu.Lock()
		sum := slots.Set{}
		for sid := range a.running {
			sum, _ = sum.Add(c.obs.session(sid).slots)
		}
		a.mu.Unlock()
		if !sum.IsZero() {
			out[a.id] = sum.String()
		}
	}
	return out
}

func ledger(snap Snapshot) map[string]string {
	out := map[string]string{}
	for id, u := range snap.Placed {
		if !u.IsZero() {
			out[id] = u.String()
		}
	}
	return out
}

func sameLedger(a, b map[string]string) error {
	keys := map[string]bool{}
	for k := range a {
		keys[k] = true
	}
	for k := range b {
		keys[k] = true
	}
	var diff []string
	for k := range keys {
		if a[k] != b[k] {
			diff = append(diff, fmt.Sprintf("%s: %q vs %q", k, a[k], b[k]))
		}
	}
	sort.Strings(diff)
	if len(diff) > 0 {
		return fmt.Errorf("ledgers differ: %s", strings.Join(diff, "; "))
	}
	return nil
}

func sids(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s%04d", prefix, i)
	}
	return out
}
