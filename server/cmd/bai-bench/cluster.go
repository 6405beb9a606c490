package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/bai-sh/bai/pkg/events"
	"github.com/bai-sh/bai/pkg/events/perms"
	"github.com/bai-sh/bai/services/agent"
	"github.com/bai-sh/bai/services/gateway"
	"github.com/bai-sh/bai/services/registry"
	"github.com/bai-sh/bai/services/scheduler"
	"github.com/bai-sh/bai/tools/bai/client"
)

// benchAK is the access key the bench drives sessions as.
const benchAK = "AKBENCH"

// clusterConfig is what runs in the process.
type clusterConfig struct {
	dir        string
	syncAlways bool
	agents     int // 0: no scheduler and no agents (the ps scenario)
	agentsConn int // agents sharing one NATS connection
	sim        agent.SimConfig
	log        zerolog.Logger
}

// cluster is an embedded NATS server with JetStream on disk and the real
// services, each on in-process connections, as server.Server wires them,
// with N sim agents instead of one process agent.
type cluster struct {
	ns        *natsserver.Server
	reg       *registry.Service
	secret    string
	svcPass   string
	conns     []*nats.Conn
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	errMu     sync.Mutex
	errs      []error
	agentsN   int
	startTime time.Duration
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func startCluster(cfg clusterConfig) (*cluster, error) {
	t0 := time.Now()
	c := &cluster{secret: randHex(20), svcPass: randHex(20)}
	tenant := perms.UserPermissions(benchAK, false)
	opts := &natsserver.Options{
		ServerName: "bai-bench",
		DontListen: true,
		NoSigs:     true,
		NoLog:      true,
		JetStream:  true,
		StoreDir:   filepath.Join(cfg.dir, "jetstream"),
		SyncAlways: cfg.syncAlways,
		// No JetStream limits changed: the work queue stream sets its own
		// consumer limit (one consumer per agent; the server's default is
		// 1,000 per stream).
		// The same users and tenant permissions as server.Server.
		Users: []*natsserver.User{
			{Username: "bai-service", Password: c.svcPass},
			{Username: benchAK, Password: c.secret, Permissions: &natsserver.Permissions{
				Publish:   &natsserver.SubjectPermission{Allow: tenant.PubAllow},
				Subscribe: &natsserver.SubjectPermission{Allow: tenant.SubAllow},
			}},
		},
	}
	ns, err := natsserver.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("nats: %w", err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(30 * time.Second) {
		ns.Shutdown()
		return nil, errors.New("nats did not start")
	}
	c.ns = ns
	ctx, cancel := context.WithCancel(context.Background())
	c.cancel = cancel
	fail := func(err error) (*cluster, error) {
		c.stop()
		return nil, err
	}

	type runner interface {
		Run(context.Context) error
		Ready() <-chan struct{}
	}
	var svcs []interface{ Ready() <-chan struct{} }
	run := func(r runner) {
		svcs = append(svcs, r)
		c.wg.Go(func() {
			if err := r.Run(ctx); err != nil {
				c.errMu.Lock()
				c.errs = append(c.errs, err)
				c.errMu.Unlock()
			}
		})
	}
	nc, err := c.serviceConn("registry")
	if err != nil {
		return fail(err)
	}
	reg, err := registry.New(registry.Config{NC: nc, Log: cfg.log, Path: filepath.Join(cfg.dir, "registry.db")})
	if err != nil {
		return fail(err)
	}
	c.reg = reg
	run(reg)
	if nc, err = c.serviceConn("gateway"); err != nil {
		return fail(err)
	}
	gw, err := gateway.New(gateway.Config{NC: nc, Log: cfg.log})
	if err != nil {
		return fail(err)
	}
	run(gw)
	if cfg.agents > 0 {
		if nc, err = c.serviceConn("scheduler"); err != nil {
			return fail(err)
		}
		sch, err := scheduler.New(scheduler.Config{NC: nc, Log: cfg.log})
		if err != nil {
			return fail(err)
		}
		run(sch)
		per := max(cfg.agentsConn, 1)
		for i := range cfg.agents {
			if i%per == 0 {
				if nc, err = c.serviceConn(fmt.Sprintf("agents-%d", i/per)); err != nil {
					return fail(err)
				}
			}
			sim := cfg.sim
			ag, err := agent.New(agent.Config{
				NC: nc, Log: cfg.log, DataDir: filepath.Join(cfg.dir, "agents", fmt.Sprint(i)),
				ID: fmt.Sprintf("sim-%05d", i), Capacity: map[string]string{"cpu": "100000", "mem": "100000g"},
				Sim: &sim,
			})
			if err != nil {
				return fail(err)
			}
			run(ag)
			// Agents start in waves: a thousand at once time out on the
			// JetStream API while they provision and make consumers.
			if len(svcs)%50 == 0 {
				if err := c.waitReady(svcs); err != nil {
					return fail(err)
				}
			}
		}
		c.agentsN = cfg.agents
	}
	if err := c.waitReady(svcs); err != nil {
		return fail(err)
	}
	c.startTime = time.Since(t0)
	return c, nil
}

// waitReady waits for every service to be ready, failing on the first
// service error.
func (c *cluster) waitReady(svcs []interface{ Ready() <-chan struct{} }) error {
	deadline := time.After(2 * time.Minute)
	for _, r := range svcs {
		for ready := false; !ready; {
			select {
			case <-r.Ready():
				ready = true
			case <-deadline:
				return errors.New("services not ready in 2 minutes")
			case <-time.After(50 * time.Millisecond):
				c.errMu.Lock()
				err := errors.Join(c.errs...)
				c.errMu.Unlock()
				if err != nil {
					return err
				}
			}
		}
	}
	return nil
}

func (c *cluster) serviceConn(name string) (*nats.Conn, error) {
	nc, err := nats.Connect("", nats.InProcessServer(c.ns), nats.UserInfo("bai-service", c.svcPass),
		nats.Name("bai-"+name), nats.MaxReconnects(-1), nats.CustomInboxPrefix(events.ServiceInboxPrefix(name)))
	if err != nil {
		return nil, fmt.Errorf("connect %s: %w", name, err)
	}
	c.conns = append(c.conns, nc)
	return nc, nil
}

// client connects the bench's tenant through the real client package.
func (c *cluster) client(ctx context.Context) (*client.Client, error) {
	return client.Connect(ctx, client.Options{
		URL: "nats://in-process", AccessKey: benchAK, SecretKey: c.secret,
		Timeout:     30 * time.Second,
		NATSOptions: []nats.Option{nats.InProcessServer(c.ns)},
	})
}

// stop ends the services, then NATS; it returns the services' errors.
func (c *cluster) stop() error {
	if c.cancel != nil {
		c.cancel()
	}
	c.wg.Wait()
	for _, nc := range c.conns {
		nc.Close()
	}
	if c.ns != nil {
		c.ns.Shutdown()
		c.ns.WaitForShutdown()
	}
	return errors.Join(c.errs...)
}
