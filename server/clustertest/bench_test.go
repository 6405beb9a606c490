//go:build cluster

package clustertest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/bai-sh/bai/pkg/events/streams"
	"github.com/bai-sh/bai/tools/bai/client"
)

// benchArgs is the load both benches run (BAI_BENCH_ARGS adds to it).
func benchArgs() []string {
	args := []string{"-scenario", "closed", "-sessions", "600", "-concurrency", "16", "-timeout", "5m"}
	return append(args, strings.Fields(os.Getenv("BAI_BENCH_ARGS"))...)
}

// runBench runs bai-bench against the bai of credentials and prints its
// report.
func runBench(t *testing.T, bin, what, credentials string) {
	fmt.Printf("\n==== bai-bench against %s\n", what)
	cmd := exec.Command(filepath.Join(bin, "bai-bench"), append([]string{"-credentials", credentials}, benchArgs()...)...)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("bai-bench against %s: %v", what, err)
	}
}

// TestClusterBench (make bench-cluster) runs the same bai-bench closed loop
// against two deployments on this machine: the one-process bai-server, and
// the cluster of TestCluster (3 NATS nodes, every stream R3, 2 gateways, 2
// schedulers, 2 registries, 3 agents, each its own process). Both fsync
// every JetStream write and run kernels on the process runtime, sandboxed
// when root. It injects no fault; it reports placements/s and the
// latencies for BENCHMARKS.md.
func TestClusterBench(t *testing.T) {
	var sandbox []string
	if os.Geteuid() != 0 {
		sandbox = []string{"--no-sandbox"}
	}
	c := startCluster(t, sandbox...)
	bin := filepath.Join(c.dir, "bin")

	// One process first, while the cluster's processes idle.
	dir := t.TempDir()
	srv := exec.Command(filepath.Join(bin, "bai-server"), "-data-dir", filepath.Join(dir, "bai"), "-listen", "127.0.0.1:-1",
		"-sync-always", "-log-level", "warn")
	srv.Stderr = os.Stderr
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	creds := client.CredentialsPath(filepath.Join(dir, "bai"))
	waitFor(t, 60*time.Second, func() error {
		cr, err := client.ReadCredentials(creds)
		if err != nil {
			return err
		}
		cl, err := client.Connect(context.Background(), client.Options{URL: cr.NATSURL, AccessKey: cr.AccessKey, SecretKey: cr.SecretKey})
		if err != nil {
			return err
		}
		defer cl.Close()
		_, err = cl.Health(context.Background())
		return err
	})
	runBench(t, bin, "the one-process bai-server (-sync-always, its one agent)", creds)
	_ = srv.Process.Signal(syscall.SIGTERM)
	_ = srv.Wait()

	nc := c.ops(t)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	cl := c.client(t)
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
	c.healthy(t, js, "")
	info, err := js.Stream(context.Background(), streams.Sessions)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Printf("cluster: session log replicas %d, leader %s\n", info.CachedInfo().Config.Replicas, info.CachedInfo().Cluster.Leader)
	runBench(t, bin, "the 3-node NATS cluster (R3, sync_interval always; "+strconv.Itoa(len(c.gateways))+" gateways, 2 schedulers, 2 registries, 3 agents)", c.adminFile)
}
