package natsconf

import (
	"context"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/bai-sh/bai/internal/natstest"
	"github.com/bai-sh/bai/pkg/events"
	"github.com/bai-sh/bai/pkg/events/perms"
	"github.com/bai-sh/bai/pkg/events/streams"
)

// LoopbackSpec is a 3-node spec on loopback with free ports and a store
// per node under dir.
func loopbackSpec(t *testing.T, dir string) Spec {
	ports := natstest.FreePorts(t, 9)
	spec := Spec{Listen: "127.0.0.1"}
	for i, n := range DefaultNodes(3) {
		n.Host = "127.0.0.1"
		n.ClientPort, n.ClusterPort, n.HTTPPort = ports[3*i], ports[3*i+1], ports[3*i+2]
		n.StoreDir = filepath.Join(dir, n.Name)
		spec.Nodes = append(spec.Nodes, n)
	}
	return spec
}

// loadEnv sets the nats-server's environment from the secrets' nats.env.
func loadEnv(t *testing.T, dir string) {
	env, err := ReadEnv(filepath.Join(dir, NATSEnvFile))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range env {
		t.Setenv(k, v)
	}
}

func TestGeneratedConfigsParse(t *testing.T) {
	dir := t.TempDir()
	spec := Spec{}
	files, err := Generate(spec)
	if err != nil {
		t.Fatal(err)
	}
	if err := Write(dir, files); err != nil {
		t.Fatal(err)
	}
	if err := Secrets(dir, spec); err != nil {
		t.Fatal(err)
	}
	loadEnv(t, dir)
	for _, n := range DefaultNodes(3) {
		opts, err := natsserver.ProcessConfigFile(filepath.Join(dir, NodeFile(n.Name)))
		if err != nil {
			t.Fatalf("%s: %v", n.Name, err)
		}
		if opts.ServerName != n.Name || opts.Cluster.Name != "bai" || len(opts.Routes) != 3 || !opts.JetStream ||
			opts.JetStreamMaxStore != DefaultMaxFileStore || !opts.SyncAlways {
			t.Fatalf("%s: options %+v", n.Name, opts)
		}
		if opts.AuthCallout == nil || opts.AuthCallout.Issuer != os.Getenv(IssuerVar) || len(opts.AuthCallout.AuthUsers) != 8 {
			t.Fatalf("%s: auth callout %+v", n.Name, opts.AuthCallout)
		}
		byName := map[string]*natsserver.User{}
		for _, u := range opts.Users {
			byName[u.Username] = u
		}
		gw := byName["bai-gateway"]
		want := perms.Merge(perms.GatewayPermissions(), perms.AuthPermissions())
		if gw == nil || gw.Password != os.Getenv("BAI_NATS_PASS_GATEWAY") || gw.Password == "" ||
			!equal(gw.Permissions.Publish.Allow, want.PubAllow) || !equal(gw.Permissions.Subscribe.Allow, want.SubAllow) {
			t.Fatalf("%s: gateway user %+v", n.Name, gw)
		}
		ag := byName["bai-agent-agent-2"]
		wantAg := perms.AgentPermissions("agent-2")
		if ag == nil || !equal(ag.Permissions.Publish.Allow, wantAg.PubAllow) || !equal(ag.Permissions.Publish.Deny, wantAg.PubDeny) ||
			!equal(ag.Permissions.Subscribe.Allow, wantAg.SubAllow) {
			t.Fatalf("%s: agent user %+v", n.Name, ag)
		}
	}
}

func equal(a, b []string) bool { return strings.Join(a, "\n") == strings.Join(b, "\n") }

func TestSecretsKeepWhatIsThere(t *testing.T) {
	dir := t.TempDir()
	spec := Spec{Agents: []string{"a1"}}
	if err := Secrets(dir, spec); err != nil {
		t.Fatal(err)
	}
	first, _ := ReadEnv(filepath.Join(dir, NATSEnvFile))
	seed, _ := os.ReadFile(filepath.Join(dir, IssuerSeedFile))
	spec.Agents = []string{"a1", "a2"}
	if err := Secrets(dir, spec); err != nil {
		t.Fatal(err)
	}
	second, _ := ReadEnv(filepath.Join(dir, NATSEnvFile))
	seed2, _ := os.ReadFile(filepath.Join(dir, IssuerSeedFile))
	if string(seed) != string(seed2) {
		t.Fatal("the issuer seed changed on a rerun")
	}
	for k, v := range first {
		if second[k] != v {
			t.Fatalf("%s changed on a rerun", k)
		}
	}
	if second["BAI_NATS_PASS_AGENT_A2"] == "" || len(second) != len(first)+1 {
		t.Fatalf("the new agent's password: %v", second)
	}
	for _, f := range []string{NATSEnvFile, IssuerSeedFile, "gateway.env", "agents/a2.env", "ops.env"} {
		st, err := os.Stat(filepath.Join(dir, f))
		if err != nil || st.Mode().Perm() != 0o600 {
			t.Fatalf("%s: %v %v", f, err, st)
		}
	}
	gw, _ := ReadEnv(filepath.Join(dir, "gateway.env"))
	if !strings.Contains(gw["BAI_NATS_URL"], "bai-gateway:"+second["BAI_NATS_PASS_GATEWAY"]+"@nats-3:4222") {
		t.Fatalf("gateway.env: %v", gw)
	}
}

func TestBadSpecsRefused(t *testing.T) {
	for name, spec := range map[string]Spec{
		"cluster name":       {Cluster: "a b"},
		"duplicate node":     {Nodes: []Node{{Name: "n", Host: "h"}, {Name: "n", Host: "h2"}}},
		"empty host":         {Nodes: []Node{{Name: "n"}}},
		"port":               {Nodes: []Node{{Name: "n", Host: "h", ClientPort: 70000}}},
		"agent id with dot":  {Agents: []string{"a.b"}},
		"duplicate agent":    {Agents: []string{"a", "a"}},
		"store too small":    {MaxFileStore: 512 << 20},
		"sync":               {Sync: "sometimes"},
		"negative sync":      {Sync: "-1s"},
		"agent id with star": {Agents: []string{"*"}},
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			if _, err := Generate(spec); !errors.Is(err, ErrSpec) {
				t.Fatalf("Generate: %v, want ErrSpec", err)
			}
			if err := Secrets(dir, spec); !errors.Is(err, ErrSpec) {
				t.Fatalf("Secrets: %v, want ErrSpec", err)
			}
			if ents, _ := os.ReadDir(dir); len(ents) != 0 {
				t.Fatalf("wrote %v", ents)
			}
		})
	}
}

// TestGeneratedClusterRuns starts the three nodes from the generated
// files, waits for a JetStream meta leader, provisions bai's streams with
// R3 as the gateway user and checks that an agent user may not publish a
// create.
func TestGeneratedClusterRuns(t *testing.T) {
	dir := t.TempDir()
	spec := loopbackSpec(t, dir)
	files, err := Generate(spec)
	if err != nil {
		t.Fatal(err)
	}
	if err := Write(dir, files); err != nil {
		t.Fatal(err)
	}
	if err := Secrets(dir, spec); err != nil {
		t.Fatal(err)
	}
	loadEnv(t, dir)
	var servers []*natsserver.Server
	for _, n := range spec.Nodes {
		opts, err := natsserver.ProcessConfigFile(filepath.Join(dir, NodeFile(n.Name)))
		if err != nil {
			t.Fatal(err)
		}
		opts.NoSigs, opts.NoLog = true, true
		ns, err := natsserver.NewServer(opts)
		if err != nil {
			t.Fatal(err)
		}
		go ns.Start()
		t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
		servers = append(servers, ns)
	}
	for _, ns := range servers {
		if !ns.ReadyForConnections(20 * time.Second) {
			t.Fatal("a node did not start")
		}
	}
	natstest.CheckFor(t, 30*time.Second, 100*time.Millisecond, func() error {
		for _, ns := range servers {
			if !ns.JetStreamIsClustered() || ns.JetStreamIsCurrent() == false {
				return errors.New("no meta leader yet")
			}
		}
		return nil
	})
	env, _ := ReadEnv(filepath.Join(dir, "gateway.env"))
	nc, err := nats.Connect(env["BAI_NATS_URL"], nats.CustomInboxPrefix(events.ServiceInboxPrefix(perms.Gateway)))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := streams.WaitProvision(ctx, js, streams.Options{}, func(int, time.Duration, error) {}); err != nil {
		t.Fatal(err)
	}
	info, err := js.Stream(ctx, streams.Sessions)
	if err != nil {
		t.Fatal(err)
	}
	if r := info.CachedInfo().Config.Replicas; r != 3 {
		t.Fatalf("session log replicas %d, want 3 (from the cluster size)", r)
	}

	agEnv, _ := ReadEnv(filepath.Join(dir, "agents/agent-1.env"))
	perr := make(chan error, 1)
	ag, err := nats.Connect(agEnv["BAI_NATS_URL"], nats.CustomInboxPrefix(events.AgentInboxPrefix("agent-1")),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { perr <- err }))
	if err != nil {
		t.Fatal(err)
	}
	defer ag.Close()
	subj, err := events.SessionEventSubject("AKIA0000000000000000", "s1", events.EventEnqueued)
	if err != nil {
		t.Fatal(err)
	}
	if err := ag.Publish(subj, []byte("{}")); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-perr:
		if !errors.Is(err, nats.ErrPermissionViolation) {
			t.Fatalf("agent publishing a create: %v, want a permissions violation", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("an agent user published a create")
	}
	wrong := strings.ReplaceAll(agEnv["BAI_NATS_URL"], os.Getenv("BAI_NATS_PASS_AGENT_AGENT_1"), "wrong")
	if _, err := nats.Connect(wrong, nats.MaxReconnects(0), nats.Timeout(8*time.Second)); err == nil {
		t.Fatal("a wrong password connected")
	}
}

var update = flag.Bool("update", false, "rewrite deploy/nats from the generator")

// TestDeployConfigsUpToDate: deploy/nats is the generator's output for
// three nodes with its defaults (bai-deploy config --out deploy/nats).
// After a change to the table or the generator:
//
//	cd server/natsconf && go test -run TestDeployConfigsUpToDate . -update
func TestDeployConfigsUpToDate(t *testing.T) {
	dir := filepath.Join("..", "..", "deploy", "nats")
	files, err := Generate(Spec{})
	if err != nil {
		t.Fatal(err)
	}
	if *update {
		if err := Write(dir, files); err != nil {
			t.Fatal(err)
		}
	}
	for name, want := range files {
		got, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil || string(got) != string(want) {
			t.Errorf("deploy/nats/%s is not the generator's output (%v); run: cd server/natsconf && go test -run TestDeployConfigsUpToDate . -update", name, err)
		}
	}
}
