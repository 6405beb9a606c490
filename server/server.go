// Package server is bai's all-in-one process: an embedded nats-server with
// JetStream on disk, and the gateway, scheduler, registry and one agent on
// this host, each on its own in-process connection. It takes the same code
// paths as a cluster of separate processes.
package server

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"golang.org/x/sync/errgroup"

	"github.com/bai-sh/bai/pkg/events"
	"github.com/bai-sh/bai/pkg/events/perms"
	"github.com/bai-sh/bai/pkg/events/streams"
	"github.com/bai-sh/bai/services/agent"
	"github.com/bai-sh/bai/services/gateway"
	"github.com/bai-sh/bai/services/registry"
	"github.com/bai-sh/bai/services/scheduler"
	"github.com/bai-sh/bai/tools/bai/client"
)

// ErrConfig wraps every configuration error.
var ErrConfig = errors.New("server: invalid config")

// Config configures the all-in-one server.
type Config struct {
	// DataDir holds JetStream, the registry, the agent's state and the
	// credentials file. Default: DefaultDataDir().
	DataDir string
	// Listen is the NATS client address. Default: 127.0.0.1:4222. Port -1
	// picks a free one.
	Listen string
	// Log is the logger. Default: zerolog.Nop().
	Log zerolog.Logger
	// SyncAlways makes JetStream fsync every write (sync_interval: always),
	// so an acknowledged request is on disk. Default: false (NATS' default,
	// a sync every 2 minutes).
	SyncAlways bool
	// AgentCapacity overrides the capacity the agent detects. Default: nil.
	AgentCapacity map[string]string
	// AgentHeartbeat is the agent's heartbeat interval. Default: the agent's.
	AgentHeartbeat time.Duration
	// IdleTimeout ends a running session idle this long (reason
	// idle-timeout). Default: the gateway's (30 minutes); negative: never.
	IdleTimeout time.Duration
	// AgentMemory is the gateway's: how long an agent's capacity counts
	// at admission after its last heartbeat, against which a create no
	// agent could ever hold is refused. Default: gateway.DefaultAgentMemory;
	// negative: no such check (every create is admitted and waits).
	AgentMemory time.Duration
	// OutputMaxBytes bounds the kept kernel output, which JetStream
	// reserves on the disk. Default: 0, the output stream as it is, or
	// streams.DefaultOutputMaxBytes (256 MiB) when it is made.
	OutputMaxBytes int64
	// JetStreamMaxStore is what JetStream may store in all. Default: 0,
	// 3/4 of the disk's free space at start (NATS' default).
	JetStreamMaxStore int64
	// MinFreeDisk is the free space under which the server stores nothing
	// new: requests that would write are refused as out of disk space
	// (running sessions go on) until space is freed. Default:
	// DefaultMinFreeDisk (64 MiB); negative: 0.
	MinFreeDisk int64
	// Runtime is the agent's kernel runtime: "process" (the default),
	// "docker" (containers on the local Docker Engine, DOCKER_HOST; images
	// must be in the engine or pullable: docs/operations.md), or "sim"
	// (kernels that run nothing: benchmarks of the control plane).
	Runtime string
	// DockerInterpreter runs a run's code in a docker kernel
	// (INTERPRETER -c code). Default: the agent's, python3.
	DockerInterpreter string
	// KeepCgroupMount leaves the host's cgroup2 mount as it is (the
	// agent's agent.SandboxOptions.KeepCgroupMount).
	KeepCgroupMount bool
	// Metrics receives every service's collectors (docs/operations.md,
	// "Metrics"). Default: nil, no metrics.
	Metrics prometheus.Registerer
	// NATSMonitor is the address (host:port) of the embedded NATS
	// server's HTTP monitoring (/varz, /jsz, ...). Default: none.
	NATSMonitor string
}

// DefaultDataDir is $XDG_DATA_HOME/bai, else ~/.local/share/bai: where
// bai looks for the credentials file.
func DefaultDataDir() string {
	if d := client.DataDir(os.Getenv); d != "" {
		return d
	}
	return filepath.Join(os.TempDir(), "bai")
}

// Server is a configured all-in-one server.
type Server struct {
	cfg   Config
	log   zerolog.Logger
	host  string
	port  int
	creds Credentials
	ready chan struct{}
	once  sync.Once

	// violations counts the permissions violations of the services'
	// connections: none, unless a service needs more than the table
	// (package perms) gives it.
	violations atomic.Int64

	mu   sync.Mutex
	ns   *natsserver.Server
	url  string
	auth *serviceAuth

	// monHost and monPort are the NATS monitoring address (port 0: none).
	monHost string
	monPort int
}

// New validates cfg and fills its defaults; it starts nothing.
func New(cfg Config) (*Server, error) {
	if cfg.DataDir == "" {
		cfg.DataDir = DefaultDataDir()
	}
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:4222"
	}
	if err := checkRuntime(cfg.Runtime); err != nil {
		return nil, err
	}
	host, portStr, err := net.SplitHostPort(cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("%w: listen address %q: %v", ErrConfig, cfg.Listen, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port < -1 || port > 65535 {
		return nil, fmt.Errorf("%w: listen port %q", ErrConfig, portStr)
	}
	if cfg.OutputMaxBytes < 0 || cfg.JetStreamMaxStore < 0 {
		return nil, fmt.Errorf("%w: negative output or JetStream store size", ErrConfig)
	}
	if cfg.JetStreamMaxStore > 0 && cfg.OutputMaxBytes > cfg.JetStreamMaxStore {
		return nil, fmt.Errorf("%w: the output stream's %s do not fit in a JetStream store of %s", ErrConfig,
			bytesText(cfg.OutputMaxBytes), bytesText(cfg.JetStreamMaxStore))
	}
	switch {
	case cfg.MinFreeDisk == 0:
		cfg.MinFreeDisk = DefaultMinFreeDisk
	case cfg.MinFreeDisk < 0:
		cfg.MinFreeDisk = 0
	}
	var monHost string
	monPort := 0
	if cfg.NATSMonitor != "" {
		h, p, err := net.SplitHostPort(cfg.NATSMonitor)
		if monPort, _ = strconv.Atoi(p); err != nil || monPort < -1 || monPort > 65535 || p == "" {
			return nil, fmt.Errorf("%w: NATS monitor address %q: want host:port", ErrConfig, cfg.NATSMonitor)
		}
		monHost = h
		if monPort == 0 {
			monPort = -1 // NATS: -1 is a free port, 0 is none
		}
	}
	return &Server{
		monHost: monHost,
		monPort: monPort,
		cfg:     cfg,
		log:     cfg.Log.With().Str("component", "server").Logger(),
		host:    host,
		port:    port,
		ready:   make(chan struct{}),
	}, nil
}

// Ready is closed once every service serves.
func (s *Server) Ready() <-chan struct{} { return s.ready }

// ClientURL is the NATS URL clients use; valid once Ready.
func (s *Server) ClientURL() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.url
}

// NATSMonitorURL is the embedded NATS server's monitoring URL, empty
// without Config.NATSMonitor; valid once Ready.
func (s *Server) NATSMonitorURL() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ns == nil || s.monPort == 0 {
		return ""
	}
	addr := s.ns.MonitorAddr()
	if addr == nil {
		return ""
	}
	return "http://" + addr.String()
}

// Credentials are the admin keypair; valid once Ready.
func (s *Server) Credentials() Credentials { return s.creds }

// CredentialsPath is where the credentials file is written.
func (s *Server) CredentialsPath() string { return client.CredentialsPath(s.cfg.DataDir) }

// Run starts NATS and the services and serves until ctx ends; then it
// stops the services, waits for them, and shuts NATS down last.
func (s *Server) Run(ctx context.Context) error {
	if err := os.MkdirAll(s.cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("server: data dir: %w", err)
	}
	creds, err := loadOrCreateCredentials(s.CredentialsPath())
	if err != nil {
		return err
	}
	s.creds = creds
	agentID, err := localAgentID(filepath.Join(s.cfg.DataDir, "agent"))
	if err != nil {
		return err
	}
	auth, err := newServiceAuth(agentID)
	if err != nil {
		return err
	}

	storeDir := filepath.Join(s.cfg.DataDir, "jetstream")
	opts := &natsserver.Options{
		ServerName:        "bai",
		Host:              s.host,
		Port:              s.port,
		NoSigs:            true,
		JetStream:         true,
		StoreDir:          storeDir,
		SyncAlways:        s.cfg.SyncAlways,
		JetStreamMaxStore: s.cfg.JetStreamMaxStore,
		HTTPHost:          s.monHost,
		HTTPPort:          s.monPort,
	}
	auth.configure(opts)
	ns, err := natsserver.NewServer(opts)
	if err != nil {
		return fmt.Errorf("server: nats: %w", err)
	}
	guard := &storageGuard{dir: storeDir, minFree: s.cfg.MinFreeDisk, log: s.log, restart: func() error { return restartJetStream(ns) }}
	ns.SetLogger(&natsLogger{log: s.cfg.Log.With().Str("component", "nats").Logger(), guard: guard}, false, false)
	go ns.Start()
	defer func() {
		ns.Shutdown()
		ns.WaitForShutdown()
	}()
	if !ns.ReadyForConnections(30 * time.Second) {
		return errors.New("server: nats did not start (is the port free?)")
	}
	s.mu.Lock()
	s.ns, s.url, s.auth = ns, ns.ClientURL(), auth
	s.mu.Unlock()
	if err := writeCredentials(s.CredentialsPath(), s.url, creds); err != nil {
		return err
	}
	streamOpts := streams.Options{OutputMaxBytes: s.cfg.OutputMaxBytes}
	if err := s.provision(ctx, ns, auth, streamOpts, storeDir); err != nil {
		return err
	}

	var conns []*nats.Conn
	defer func() {
		for _, nc := range conns {
			nc.Close()
		}
	}()
	// Each service reads only its own inbox (its permissions name it).
	connect := func(name string, extra ...nats.Option) (*nats.Conn, error) {
		extra = append([]nats.Option{nats.CustomInboxPrefix(events.ServiceInboxPrefix(name))}, extra...)
		nc, err := nats.Connect("", append([]nats.Option{nats.InProcessServer(ns), nats.UserInfo("bai-"+name, auth.passwords["bai-"+name]),
			nats.Name("bai-" + name), nats.MaxReconnects(-1), nats.ErrorHandler(logNATSError(s.log, name, &s.violations))}, extra...)...)
		if err != nil {
			return nil, fmt.Errorf("server: connect %s: %w", name, err)
		}
		conns = append(conns, nc)
		return nc, nil
	}
	type runner interface {
		Run(context.Context) error
		Ready() <-chan struct{}
	}
	var services []runner
	nc, err := connect("auth")
	if err != nil {
		return err
	}
	authSvc, err := gateway.NewAuth(gateway.AuthConfig{NC: nc, Log: s.cfg.Log, Issuer: auth.issuer,
		OnChange: func(ak string) { closeKey(ns, s.log, ak) }})
	if err != nil {
		return err
	}
	services = append(services, authSvc)
	if nc, err = connect("registry"); err != nil {
		return err
	}
	if err != nil {
		return err
	}
	reg, err := registry.New(registry.Config{NC: nc, Log: s.cfg.Log, Path: filepath.Join(s.cfg.DataDir, "registry.db"),
		AdminAccessKey: creds.AccessKey, IdleTimeout: s.cfg.IdleTimeout, Metrics: s.cfg.Metrics})
	if err != nil {
		return err
	}
	services = append(services, reg)
	if nc, err = connect("gateway"); err != nil {
		return err
	}
	gw, err := gateway.New(gateway.Config{NC: nc, Log: s.cfg.Log, IdleTimeout: s.cfg.IdleTimeout, AgentMemory: s.cfg.AgentMemory, AdminAccessKey: creds.AccessKey,
		Streams: streamOpts, Storage: guard.Err, Metrics: s.cfg.Metrics})
	if err != nil {
		return err
	}
	services = append(services, gw)
	if nc, err = connect("scheduler"); err != nil {
		return err
	}
	sch, err := scheduler.New(scheduler.Config{NC: nc, Log: s.cfg.Log, Streams: streamOpts, Metrics: s.cfg.Metrics})
	if err != nil {
		return err
	}
	services = append(services, sch)
	if nc, err = connect("agent", nats.CustomInboxPrefix(events.AgentInboxPrefix(agentID))); err != nil {
		return err
	}
	var sim *agent.SimConfig
	if s.cfg.Runtime == RuntimeSim {
		sim = &agent.SimConfig{}
	}
	rt, closeRT, err := s.agentRuntime(ctx, agentID)
	if err != nil {
		return err
	}
	defer closeRT()
	ag, err := agent.New(agent.Config{
		NC: nc, Log: s.cfg.Log, DataDir: filepath.Join(s.cfg.DataDir, "agent"), ID: agentID, Runtime: rt,
		Capacity: s.cfg.AgentCapacity, HeartbeatInterval: s.cfg.AgentHeartbeat, Metrics: s.cfg.Metrics, Sim: sim,
		// Kernels see none of the server's files (JetStream, credentials).
		Sandbox: agent.SandboxOptions{Hide: []string{s.cfg.DataDir}, KeepCgroupMount: s.cfg.KeepCgroupMount},
	})
	if err != nil {
		return err
	}
	services = append(services, ag)

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		guard.run(gctx)
		return nil
	})
	for _, svc := range services {
		g.Go(func() error { return svc.Run(gctx) })
	}
	g.Go(func() error {
		for _, svc := range services {
			select {
			case <-svc.Ready():
			case <-gctx.Done():
				return nil
			}
		}
		if err := authSvc.Keys().EnsureAdmin(gctx, creds.AccessKey, creds.SecretKey); err != nil {
			return fmt.Errorf("server: admin keypair: %w", err)
		}
		s.once.Do(func() { close(s.ready) })
		s.log.Info().Str("url", s.url).Str("credentials", s.CredentialsPath()).Msg("server_ready")
		return nil
	})
	return g.Wait()
}

// provision makes the streams with the server's options before a service
// starts (each provisions them too, then finds them made); a store too
// small for the output stream's reservation is said in words.
func (s *Server) provision(ctx context.Context, ns *natsserver.Server, auth *serviceAuth, o streams.Options, storeDir string) error {
	nc, err := nats.Connect("", nats.InProcessServer(ns), nats.UserInfo("bai-gateway", auth.passwords["bai-gateway"]), nats.Name("bai-provision"),
		// It connects as the gateway, whose permissions let it read only this inbox.
		nats.CustomInboxPrefix(events.ServiceInboxPrefix(perms.Gateway)))
	if err != nil {
		return fmt.Errorf("server: connect: %w", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("server: jetstream: %w", err)
	}
	pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := streams.Provision(pctx, js, o); err != nil {
		return explainProvision(err, ns, o, storeDir)
	}
	return nil
}
