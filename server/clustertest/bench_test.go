//go:build cluster

package clustertest

import (
	"context"
	"fmt"
	"io"
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
	// Small sessions: capacity never holds the loop back (an agent offers
	// its host's cores; a removed session frees its share a moment later).
	args := []string{"-scenario", "closed", "-sessions", "2000", "-concurrency", "64", "-timeout", "5m", "-slots", "cpu=0.01,mem=32m"}
	return append(args, strings.Fields(os.Getenv("BAI_BENCH_ARGS"))...)
}

// runBench runs bai-bench against the bai of credentials and prints its
// report, then the CPU time the deployment's processes (pids) spent
// meanwhile, per session.
func runBench(t *testing.T, bin, what, credentials string, pids []int) {
	fmt.Printf("\n==== bai-bench against %s\n", what)
	cmd := exec.Command(filepath.Join(bin, "bai-bench"), append([]string{"-credentials", credentials}, benchArgs()...)...)
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = io.MultiWriter(os.Stdout, &out), os.Stderr
	cpu0 := cpuOf(pids)
	if err := cmd.Run(); err != nil {
		t.Fatalf("bai-bench against %s: %v", what, err)
	}
	cpu := cpuOf(pids) - cpu0
	var n int
	for _, line := range strings.Split(out.String(), "\n") {
		if _, err := fmt.Sscanf(line, "requests: %d accepted", &n); err == nil {
			break
		}
	}
	if n > 0 {
		fmt.Printf("deployment cpu: %.2fs user+sys in its %d processes, %.2f ms per session (the bench's own process not counted)\n",
			cpu.Seconds(), len(pids), float64(cpu.Microseconds())/1000/float64(n))
	}
}

// cpuOf is the user+system CPU time the processes pids have used so far
// (/proc/PID/stat; a process gone counts 0).
func cpuOf(pids []int) time.Duration {
	var total time.Duration
	for _, pid := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		// The fields after the command name (which may hold spaces).
		f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
		if len(f) < 13 {
			continue
		}
		ut, _ := strconv.ParseInt(f[11], 10, 64)
		st, _ := strconv.ParseInt(f[12], 10, 64)
		total += time.Duration(ut+st) * time.Second / 100 // USER_HZ
	}
	return total
}

// pids are the cluster's running processes.
func (c *cluster) pids() []int {
	var out []int
	for _, group := range [][]*proc{c.nats, c.gateways, c.schedulers, c.registries, c.agents} {
		for _, p := range group {
			p.mu.Lock()
			if p.cmd != nil && p.cmd.Process != nil {
				out = append(out, p.cmd.Process.Pid)
			}
			p.mu.Unlock()
		}
	}
	return out
}

// TestClusterBench (make bench-cluster) runs the same bai-bench closed loop
// against two deployments on this machine: the one-process bai-server, and
// the cluster of TestCluster (3 NATS nodes, every stream R3, 2 gateways, 2
// schedulers, 2 registries, 3 agents, each its own process). Both fsync
// every JetStream write (BAI_CLUSTER_SYNC=2m: NATS' default for both).
// Kernels run on the sim runtime (they run nothing: the figures are the
// control plane's), or with BAI_BENCH_RUNTIME=process as real processes,
// sandboxed when root. It injects no fault; it reports placements/s and the
// latencies for BENCHMARKS.md.
func TestClusterBench(t *testing.T) {
	rt := os.Getenv("BAI_BENCH_RUNTIME")
	if rt == "" {
		rt = "sim"
	}
	agentArgs := []string{"--runtime", rt}
	if os.Geteuid() != 0 {
		agentArgs = append(agentArgs, "--no-sandbox")
	}
	c := startCluster(t, agentArgs...)
	// Sandboxed kernels killed with their agent leave their mounts; the
	// temporary dirs go only without them.
	t.Cleanup(func() {
		for _, p := range c.agents {
			p.kill()
		}
		unmountUnder(t, c.dir)
	})
	bin := filepath.Join(c.dir, "bin")
	fmt.Printf("kernels on the %s runtime\n", rt)

	// One process first, while the cluster's processes idle.
	dir := t.TempDir()
	srvArgs := []string{"-data-dir", filepath.Join(dir, "bai"), "-listen", "127.0.0.1:-1", "-log-level", "warn", "-runtime", rt}
	sync := "NATS' default sync_interval"
	if c.spec.Sync == "always" {
		srvArgs, sync = append(srvArgs, "-sync-always"), "-sync-always"
	}
	srv := exec.Command(filepath.Join(bin, "bai-server"), srvArgs...)
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
	runBench(t, bin, "the one-process bai-server ("+sync+", its one agent, "+rt+" runtime)", creds, []int{srv.Process.Pid})
	_ = srv.Process.Signal(syscall.SIGTERM)
	_ = srv.Wait()
	// A clean stop keeps the kernels still there for adoption, mounts
	// and all (a removal may still be under way).
	unmountUnder(t, dir)

	nc := c.ops(t)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	c.up(t, c.client(t), js)
	info, err := js.Stream(context.Background(), streams.Sessions)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Printf("cluster: session log replicas %d, leader %s\n", info.CachedInfo().Config.Replicas, info.CachedInfo().Cluster.Leader)
	runBench(t, bin, "the 3-node NATS cluster (R3, sync_interval "+c.spec.Sync+"; "+strconv.Itoa(len(c.gateways))+
		" gateways, 2 schedulers, 2 registries, 3 agents, "+rt+" runtime)", c.adminFile, c.pids())
}

// unmountUnder detaches every mount under dir (deepest first).
func unmountUnder(t *testing.T, dir string) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return
	}
	var under []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && strings.HasPrefix(f[4], dir+"/") {
			under = append(under, f[4])
		}
	}
	for i := len(under) - 1; i >= 0; i-- {
		if err := syscall.Unmount(under[i], syscall.MNT_DETACH); err != nil {
			t.Logf("unmount %s: %v", under[i], err)
		}
	}
}
