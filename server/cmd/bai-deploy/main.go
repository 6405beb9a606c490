// Command bai-deploy writes what a bai cluster of separate processes needs
// from the one permission table of pkg/events/perms:
//
//	bai-deploy config  [flags] --out DIR   NATS configs: DIR/nats-N.conf per node, DIR/auth.conf
//	bai-deploy secrets [flags] --out DIR   DIR/nats.env (passwords, issuer key), DIR/auth-issuer.seed,
//	                                       DIR/<service>.env and DIR/agents/<id>.env (BAI_NATS_URL)
//
// The configs hold no secret (they name environment variables) and are
// the same on every installation; secrets are made once and kept on a
// rerun (a new agent gets its password, the others stay). Both take the
// same --nodes/--hosts/--agents. docs/operations.md shows the steps.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/bai-sh/bai/server/natsconf"
)

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "bai-deploy:", err)
		os.Exit(2)
	}
}

const usage = "usage: bai-deploy config|secrets [flags] --out DIR (bai-deploy config -h: the flags)"

func run(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return errors.New(usage)
	}
	cmd := args[0]
	if cmd != "config" && cmd != "secrets" {
		return fmt.Errorf("unknown command %q; %s", cmd, usage)
	}
	fs := flag.NewFlagSet("bai-deploy "+cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	out := fs.String("out", "", "directory to write into (required)")
	nodes := fs.Int("nodes", 3, "NATS nodes of the cluster: nats-1..nats-N")
	hosts := fs.String("hosts", "", "comma-separated host of each node, in order (default: the node names, as in compose); host:client:cluster:http sets ports too")
	agents := fs.String("agents", "agent-1,agent-2,agent-3", "comma-separated agent ids, one NATS user each")
	registries := fs.Int("registries", 2, "registry replicas: NATS users bai-registry, bai-registry-2, ..., each with its own durable consumer")
	cluster := fs.String("cluster", "bai", "cluster name")
	storeDir := fs.String("store-dir", "/var/lib/bai/nats", "JetStream directory on each node")
	maxStore := fs.String("max-file-store", "8g", "JetStream file store of each node (k, m, g, t: 1024-based); at least the output stream + 1g")
	outputMax := fs.String("output-max-bytes", "256m", "the output stream's size the services run with (for the store sizing)")
	syncFlag := fs.String("sync", "always", "sync_interval: always, or a duration (2m is NATS' default); the trade-off is in the config's comment")
	listen := fs.String("listen", "0.0.0.0", "address every port binds to")
	if err := fs.Parse(args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if *out == "" {
		return errors.New("--out DIR is required")
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	spec := natsconf.Spec{Registries: *registries, Cluster: *cluster, StoreDir: *storeDir, Sync: *syncFlag, Listen: *listen}
	var err error
	if spec.MaxFileStore, err = parseSize(*maxStore); err != nil {
		return fmt.Errorf("--max-file-store: %w", err)
	}
	if spec.OutputMaxBytes, err = parseSize(*outputMax); err != nil {
		return fmt.Errorf("--output-max-bytes: %w", err)
	}
	if *nodes < 1 || *nodes > 15 {
		return fmt.Errorf("--nodes %d: want 1 to 15 (3 or 5 for a cluster that survives a node)", *nodes)
	}
	spec.Nodes = natsconf.DefaultNodes(*nodes)
	if *hosts != "" {
		hs := strings.Split(*hosts, ",")
		if len(hs) != *nodes {
			return fmt.Errorf("--hosts names %d hosts for %d nodes", len(hs), *nodes)
		}
		for i, h := range hs {
			if err := setHost(&spec.Nodes[i], h); err != nil {
				return fmt.Errorf("--hosts %q: %w", h, err)
			}
		}
	}
	spec.Agents = []string{}
	if *agents != "" {
		spec.Agents = strings.Split(*agents, ",")
	}
	if cmd == "secrets" {
		if err := natsconf.Secrets(*out, spec); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "secrets in %s: %s for nats-server, %s for the gateway running the auth callout only, <service>.env per service and agent\n",
			*out, natsconf.NATSEnvFile, natsconf.IssuerSeedFile)
		return nil
	}
	files, err := natsconf.Generate(spec)
	if err != nil {
		return err
	}
	if err := natsconf.Write(*out, files); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "wrote %d files to %s\n", len(files), *out)
	return nil
}

// setHost reads host or host:client:cluster:http.
func setHost(n *natsconf.Node, v string) error {
	parts := strings.Split(v, ":")
	if len(parts) != 1 && len(parts) != 4 {
		return errors.New("want host or host:client:cluster:http")
	}
	n.Host = parts[0]
	for i, p := range []*int{&n.ClientPort, &n.ClusterPort, &n.HTTPPort} {
		if len(parts) == 1 {
			break
		}
		port, err := strconv.Atoi(parts[i+1])
		if err != nil {
			return fmt.Errorf("port %q is not a number", parts[i+1])
		}
		*p = port
	}
	return nil
}

// parseSize reads bytes with an optional k, m, g or t (1024-based).
func parseSize(v string) (int64, error) {
	s := strings.ToLower(strings.TrimSpace(v))
	mult := int64(1)
	if n := len(s); n > 0 {
		if i := strings.IndexByte("kmgt", s[n-1]); i >= 0 {
			mult = int64(1) << (10 * (i + 1))
			s = s[:n-1]
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n <= 0 || n > (1<<62)/mult {
		return 0, fmt.Errorf("%q is not a size in bytes (e.g. 512m, 8g)", v)
	}
	return n * mult, nil
}
