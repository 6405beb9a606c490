// Package natsconf writes the NATS server configuration of a bai cluster:
// one file per node of an N-node JetStream cluster (routes, cluster name,
// JetStream store and its limits, sync_interval, a TLS example) and one
// shared authorization file with the auth callout and a NATS user per
// service identity and per agent, whose permissions come from the one
// table of package perms (never copied by hand). bai-deploy (server/cmd)
// is its command line; deploy/nats holds its output for three nodes.
//
// No secret is in the files: every password and the callout's issuer key
// are environment variables of the nats-server process ($BAI_NATS_PASS_*,
// $BAI_AUTH_ISSUER), written once per installation by Secrets, so the
// configs are the same everywhere and may be checked in.
package natsconf

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/bai-sh/bai/pkg/events"
	"github.com/bai-sh/bai/pkg/events/perms"
	"github.com/bai-sh/bai/pkg/events/streams"
)

// ErrSpec wraps every invalid Spec.
var ErrSpec = errors.New("natsconf: invalid spec")

// Node is one NATS server of the cluster.
type Node struct {
	// Name is the server_name, unique in the cluster (nats-1, ...).
	Name string
	// Host is the address the other nodes and the clients reach it at
	// (a host name in compose, an IP or DNS name on real hosts).
	Host string
	// ClientPort (default 4222), ClusterPort (default 6222) and HTTPPort
	// (monitoring; default 8222; -1: none).
	ClientPort, ClusterPort, HTTPPort int
	// StoreDir is the node's JetStream directory. Default: Spec.StoreDir.
	StoreDir string
}

// Spec is what the configs are made from.
type Spec struct {
	// Cluster is the cluster name. Default "bai".
	Cluster string
	// Nodes are the servers; default: DefaultNodes(3).
	Nodes []Node
	// Agents are the agent ids that get a NATS user each (bai-agent-<id>,
	// permissions perms.AgentPermissions(id)). Default: agent-1..agent-3.
	Agents []string
	// Registries is the count of registry replicas: each its own NATS user
	// and durable consumer of the log (RegistryUser(i), RegistryDurable(i)).
	// Default 2.
	Registries int
	// StoreDir is the JetStream directory of a node without its own.
	// Default /var/lib/bai/nats.
	StoreDir string
	// MaxFileStore is each node's JetStream file store limit in bytes.
	// Default DefaultMaxFileStore.
	MaxFileStore int64
	// OutputMaxBytes is the output stream's size the services are run
	// with (only for the sizing comment and check). Default
	// streams.DefaultOutputMaxBytes.
	OutputMaxBytes int64
	// Sync is the sync_interval: "always" (the default) or a Go duration
	// ("2m" is NATS' own default).
	Sync string
	// Listen is the address every port binds to. Default 0.0.0.0.
	Listen string
}

// DefaultMaxFileStore is each node's JetStream file store: 8 GiB. The
// arithmetic is in the config's comment (sizing).
const DefaultMaxFileStore = 8 << 30

// DefaultNodes are n nodes nats-1..nats-n on hosts of the same names with
// the standard ports (compose's and systemd's layout).
func DefaultNodes(n int) []Node {
	out := make([]Node, n)
	for i := range out {
		name := "nats-" + strconv.Itoa(i+1)
		out[i] = Node{Name: name, Host: name}
	}
	return out
}

// DefaultAgents are n agent ids agent-1..agent-n.
func DefaultAgents(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = "agent-" + strconv.Itoa(i+1)
	}
	return out
}

func (s *Spec) fill() error {
	if s.Cluster == "" {
		s.Cluster = "bai"
	}
	if len(s.Nodes) == 0 {
		s.Nodes = DefaultNodes(3)
	}
	if s.Agents == nil {
		s.Agents = DefaultAgents(3)
	}
	if s.Registries == 0 {
		s.Registries = 2
	}
	if s.Registries < 0 || s.Registries > 16 {
		return fmt.Errorf("%w: %d registries: 1 to 16", ErrSpec, s.Registries)
	}
	if s.StoreDir == "" {
		s.StoreDir = "/var/lib/bai/nats"
	}
	if s.MaxFileStore == 0 {
		s.MaxFileStore = DefaultMaxFileStore
	}
	if s.OutputMaxBytes == 0 {
		s.OutputMaxBytes = streams.DefaultOutputMaxBytes
	}
	if s.Sync == "" {
		s.Sync = "always"
	}
	if s.Listen == "" {
		s.Listen = "0.0.0.0"
	}
	if !validToken(s.Cluster) {
		return fmt.Errorf("%w: cluster name %q: letters, digits, - and _ only", ErrSpec, s.Cluster)
	}
	names := map[string]bool{}
	for i := range s.Nodes {
		n := &s.Nodes[i]
		if n.ClientPort == 0 {
			n.ClientPort = 4222
		}
		if n.ClusterPort == 0 {
			n.ClusterPort = 6222
		}
		if n.HTTPPort == 0 {
			n.HTTPPort = 8222
		}
		if n.StoreDir == "" {
			n.StoreDir = s.StoreDir
		}
		if !validToken(n.Name) || names[n.Name] {
			return fmt.Errorf("%w: node name %q: unique, letters, digits, - and _ only", ErrSpec, n.Name)
		}
		names[n.Name] = true
		if n.Host == "" || strings.ContainsAny(n.Host, " \t\"'/:") {
			return fmt.Errorf("%w: node %s: host %q is not a host name or address", ErrSpec, n.Name, n.Host)
		}
		for _, p := range []int{n.ClientPort, n.ClusterPort} {
			if p < 1 || p > 65535 {
				return fmt.Errorf("%w: node %s: port %d out of 1..65535", ErrSpec, n.Name, p)
			}
		}
		if n.HTTPPort != -1 && (n.HTTPPort < 1 || n.HTTPPort > 65535) {
			return fmt.Errorf("%w: node %s: monitoring port %d out of 1..65535 (-1: none)", ErrSpec, n.Name, n.HTTPPort)
		}
	}
	seen := map[string]bool{}
	for _, a := range s.Agents {
		if !events.ValidToken(a) || !validToken(a) || seen[a] {
			return fmt.Errorf("%w: agent id %q: unique, letters, digits, - and _ only", ErrSpec, a)
		}
		seen[a] = true
	}
	if s.MaxFileStore < 0 || s.OutputMaxBytes < 0 {
		return fmt.Errorf("%w: negative store size", ErrSpec)
	}
	if need := minFileStore(s.OutputMaxBytes); s.MaxFileStore < need {
		return fmt.Errorf("%w: a file store of %d bytes is under the %d bai needs (output stream %d + %d for the session log, work queue and buckets)",
			ErrSpec, s.MaxFileStore, need, s.OutputMaxBytes, logReserve)
	}
	if s.Sync != "always" {
		if d, err := time.ParseDuration(s.Sync); err != nil || d <= 0 {
			return fmt.Errorf("%w: sync %q: \"always\" or a duration such as 2m", ErrSpec, s.Sync)
		}
	}
	return nil
}

// logReserve is the least room kept beside the output stream's
// reservation for everything else (1 GiB).
const logReserve = 1 << 30

// minFileStore is the smallest file store that holds the output stream's
// reservation and leaves logReserve for the rest.
func minFileStore(output int64) int64 { return output + logReserve }

func validToken(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			return false
		}
	}
	return true
}

// AuthFile is the name of the shared authorization file the node configs
// include.
const AuthFile = "auth.conf"

// NodeFile is the config file name of node name.
func NodeFile(name string) string { return name + ".conf" }

// Generate returns the config files of spec by name: NodeFile(n) per node
// and AuthFile.
func Generate(spec Spec) (map[string][]byte, error) {
	if err := spec.fill(); err != nil {
		return nil, err
	}
	out := map[string][]byte{AuthFile: []byte(authConf(spec))}
	for _, n := range spec.Nodes {
		out[NodeFile(n.Name)] = []byte(nodeConf(spec, n))
	}
	return out, nil
}

const header = "# Generated by bai-deploy (server/natsconf) from the permission table of\n" +
	"# pkg/events/perms. Do not edit: change the generator or its flags and\n" +
	"# run it again (make deploy-configs rewrites deploy/nats).\n"

func nodeConf(s Spec, n Node) string {
	var b strings.Builder
	b.WriteString(header)
	fmt.Fprintf(&b, "\nserver_name: %q\nlisten: \"%s:%d\"\n", n.Name, s.Listen, n.ClientPort)
	if n.HTTPPort > 0 {
		fmt.Fprintf(&b, "# Monitoring (/healthz?js-enabled-only=true, /jsz, /routez): docs/operations.md.\nhttp: \"%s:%d\"\n", s.Listen, n.HTTPPort)
	}
	fmt.Fprintf(&b, `
cluster {
  name: %q
  listen: "%s:%d"
  # Every node lists every node, itself included (NATS ignores its own
  # route); a restarted node finds the others from any one of them.
  routes: [
`, s.Cluster, s.Listen, n.ClusterPort)
	for _, o := range s.Nodes {
		fmt.Fprintf(&b, "    \"nats-route://%s:%d\"\n", o.Host, o.ClusterPort)
	}
	b.WriteString("  ]\n")
	b.WriteString(`  # Route TLS (uncomment with real files; every node needs the same CA):
  # tls {
  #   cert_file: "/etc/bai/tls/route.crt"
  #   key_file:  "/etc/bai/tls/route.key"
  #   ca_file:   "/etc/bai/tls/ca.crt"
  #   verify:    true
  # }
}
`)
	fmt.Fprintf(&b, `
# Client TLS (uncomment with real files; clients then use tls://host:%d
# and, for a private CA, BAI_NATS_URL plus the CA in the system's store):
# tls {
#   cert_file: "/etc/bai/tls/server.crt"
#   key_file:  "/etc/bai/tls/server.key"
#   ca_file:   "/etc/bai/tls/ca.crt"
#   timeout:   2
# }
`, n.ClientPort)
	b.WriteString(jetstreamConf(s, n))
	fmt.Fprintf(&b, "\ninclude %q\n", AuthFile)
	return b.String()
}

func jetstreamConf(s Spec, n Node) string {
	mib := func(v int64) int64 { return v >> 20 }
	var b strings.Builder
	fmt.Fprintf(&b, `
jetstream {
  store_dir: %q
  # Sizing (each node holds a full copy of every R3 stream, so a node's
  # store is the whole of bai's data):
  #   output stream BAI_OUTPUT  %6d MiB  reserved up front (its max_bytes;
  #                                      JetStream refuses a stream whose
  #                                      max_bytes do not fit the store)
  #   session log BAI_SESSIONS,          bounded by age (30 days): ~8 events
  #   work queue BAI_WORK                of ~0.5 KiB per session, the work
  #                                      ones copied to BAI_WORK: ~6 KiB a
  #                                      session, ~1 GiB per 170,000 sessions
  #                                      a month
  #   buckets (agents, leases, keypairs, images, admission), small
  #   uploads (object store), each upload's bytes until the session ends
  #   at least output + 1 GiB  = %6d MiB (the generator refuses less)
  #   max_file_store             %6d MiB: ~%d GiB for log and uploads
  # Raise it with the output stream (bai-gateway and bai-scheduler
  # --output-max-bytes) and with the sessions a month you run.
  max_file_store: %d
  max_memory_store: 256MB
`, n.StoreDir, mib(s.OutputMaxBytes), mib(minFileStore(s.OutputMaxBytes)), mib(s.MaxFileStore),
		(s.MaxFileStore-s.OutputMaxBytes)>>30, s.MaxFileStore)
	b.WriteString(`  # sync_interval: when JetStream fsyncs its files.
  #   always: every write is on this node's disk before it is
  #     acknowledged; an acknowledged create survives the power loss of
  #     every node at once. Costs an fsync per write (on SSDs ~0.1-1 ms,
  #     placements/s fall by a few times on spinning disks).
  #   2m (NATS' default): writes sit in the page cache up to two minutes.
  #     With R3 an acknowledged write is on a quorum (two nodes' memory),
  #     so it is lost only if two nodes lose power (not just the process:
  #     kill -9 keeps the page cache) within the interval. Faster.
  # bai's design (DESIGN.md section 8) asks "acknowledged means on disk".
`)
	fmt.Fprintf(&b, "  sync_interval: %s\n}\n", syncValue(s.Sync))
	return b.String()
}

func syncValue(v string) string {
	if v == "always" {
		return "always"
	}
	return strconv.Quote(v)
}

// PasswordVar is the environment variable of the nats-server process
// (and the service) that holds NATS user's password.
func PasswordVar(user string) string {
	return "BAI_NATS_PASS_" + envName(strings.TrimPrefix(user, "bai-"))
}

// IssuerVar holds the auth callout issuer's public account key.
const IssuerVar = "BAI_AUTH_ISSUER"

func envName(s string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z':
			return r - 'a' + 'A'
		case r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
			return r
		}
		return '_'
	}, s)
}

// RegistryUser is the NATS user of registry replica i (1-based):
// bai-registry, bai-registry-2, ...
func RegistryUser(i int) string { return RegistryDurable(i) }

// RegistryDurable is the durable consumer of registry replica i: the
// first has the registry's default name.
func RegistryDurable(i int) string {
	if i == 1 {
		return perms.RegistryDurable
	}
	return perms.RegistryDurable + "-" + strconv.Itoa(i)
}

// AgentUser is the NATS user of agent id in a cluster.
func AgentUser(id string) string { return "bai-agent-" + id }

// OpsUser is the operators' NATS user (perms.OpsUser).
const OpsUser = perms.OpsUser

// User is one NATS user of the authorization block.
type User struct {
	Name  string
	Perms perms.Permissions
	// Why is the comment above it.
	Why string
}

// Users are the NATS users of spec's cluster: the services, the agents
// and the operators' user. The gateway runs the auth callout on its one
// connection, so its user has Merge(Gateway, Auth).
func Users(spec Spec) ([]User, error) {
	if err := spec.fill(); err != nil {
		return nil, err
	}
	users := []User{
		{Name: perms.ServiceUser(perms.Gateway), Perms: perms.Merge(perms.GatewayPermissions(), perms.AuthPermissions()),
			Why: "bai-gateway with --auth-issuer-seed-file: the gateway and the auth callout on one connection"},
		{Name: perms.ServiceUser(perms.Scheduler), Perms: perms.SchedulerPermissions(), Why: "bai-scheduler (any number: one leads)"},
	}
	for i := 1; i <= spec.Registries; i++ {
		users = append(users, User{Name: RegistryUser(i), Perms: perms.RegistryPermissionsFor(RegistryDurable(i)),
			Why: "bai-registry --durable " + RegistryDurable(i)})
	}
	for _, a := range spec.Agents {
		users = append(users, User{Name: AgentUser(a), Perms: perms.AgentPermissions(a), Why: "bai-agent --id " + a})
	}
	users = append(users, User{Name: OpsUser, Perms: perms.OpsPermissions(),
		Why: "operators: nats stream info/backup/restore, the cluster test's leader lookups"})
	return users, nil
}

func authConf(s Spec) string {
	users, _ := Users(s)
	var b strings.Builder
	b.WriteString(header)
	fmt.Fprintf(&b, `
# Authorization of every node (the same file everywhere).
#
# The bai services and agents are NATS users with passwords; the nats-server
# reads each password from its environment ($%s, ...: the
# nats.env that "bai-deploy secrets" writes, given to nats-server by
# systemd's EnvironmentFile or compose's env_file). Every other connection
# (every bai client, with its access key and secret) goes through the auth
# callout: the gateway that holds the account seed (its
# --auth-issuer-seed-file) checks the keypair and signs a user JWT with the
# keypair's own permissions (pkg/events/perms.UserPermissions).
#
# Permissions are pkg/events/perms's table; docs/security.md shows it.
authorization {
  timeout: 5
  users: [
`, PasswordVar(perms.ServiceUser(perms.Gateway)))
	for _, u := range users {
		fmt.Fprintf(&b, "    # %s\n    {\n      user: %q\n      password: $%s\n", u.Why, u.Name, PasswordVar(u.Name))
		b.WriteString(permissionsConf(u.Perms, "      "))
		b.WriteString("    }\n")
	}
	b.WriteString("  ]\n")
	fmt.Fprintf(&b, `  auth_callout {
    # The callout account's public nkey; its seed is only on the gateway
    # (--auth-issuer-seed-file), never on a NATS node.
    issuer: $%s
    # These users are checked by this file, not by the callout.
    auth_users: [`, IssuerVar)
	for i, u := range users {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%q", u.Name)
	}
	b.WriteString("]\n  }\n}\n")
	return b.String()
}

func permissionsConf(p perms.Permissions, indent string) string {
	var b strings.Builder
	list := func(key string, subjects []string) {
		if len(subjects) == 0 {
			return
		}
		fmt.Fprintf(&b, "%s    %s: [\n", indent, key)
		for _, s := range subjects {
			fmt.Fprintf(&b, "%s      %q\n", indent, s)
		}
		fmt.Fprintf(&b, "%s    ]\n", indent)
	}
	fmt.Fprintf(&b, "%spermissions {\n%s  publish {\n", indent, indent)
	list("allow", p.PubAllow)
	list("deny", p.PubDeny)
	fmt.Fprintf(&b, "%s  }\n%s  subscribe {\n", indent, indent)
	list("allow", p.SubAllow)
	list("deny", p.SubDeny)
	fmt.Fprintf(&b, "%s  }\n%s}\n", indent, indent)
	return b.String()
}

// sortedNames are m's keys in order.
func sortedNames(m map[string][]byte) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// Write writes files (Generate's) into dir, each 0644.
func Write(dir string, files map[string][]byte) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("natsconf: %w", err)
	}
	for _, name := range sortedNames(files) {
		if err := os.WriteFile(filepath.Join(dir, name), files[name], 0o644); err != nil {
			return fmt.Errorf("natsconf: %w", err)
		}
	}
	return nil
}
