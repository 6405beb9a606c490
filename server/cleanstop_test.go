package server

import (
	"bufio"
	"fmt"
	"hash/fnv"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bai-sh/bai/pkg/events"
)

// mountedUnder lists this host's mount points under dir (mountinfo of
// this process: the host's, not a kernel's namespace).
func mountedUnder(t *testing.T, dir string) []string {
	t.Helper()
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 4 && strings.HasPrefix(fields[4], dir+"/") {
			out = append(out, fields[4])
		}
	}
	return out
}

// baiCgroups lists the cgroup directories of the agent over dataDir: its
// kernels' parent (named "bai-" and a hash of its kernels' root, as
// agent.SandboxOptions.CgroupName says) and those below it.
func baiCgroups(t *testing.T, dataDir string) []string {
	t.Helper()
	h := fnv.New64a()
	h.Write([]byte(filepath.Join(dataDir, "agent", "kernels")))
	name := fmt.Sprintf("/bai-%016x", h.Sum64())
	var out []string
	_ = filepath.WalkDir("/sys/fs/cgroup", func(path string, d fs.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return nil
		}
		if strings.Count(path, "/") > 8 {
			return fs.SkipDir
		}
		if strings.Contains(path, name) {
			out = append(out, path)
		}
		return nil
	})
	return out
}

// procsIn counts the processes of a cgroup directory (v2 or v1).
func procsIn(t *testing.T, dir string) int {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
	if err != nil {
		return 0
	}
	return len(strings.Fields(string(data)))
}

// TestCleanStopKeepsKernelsForAdoption stops the server with a session
// running. By design the kernel stays: its work directory stays mounted
// and its cgroup in place, with no process in it; the next start adopts
// it, the session stays RUNNING and its files are there. Once it ends,
// and the server stops with no session, nothing of bai is left mounted
// or in the cgroup tree.
func TestCleanStopKeepsKernelsForAdoption(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the sandbox's mounts and cgroups need root")
	}
	dir := t.TempDir()
	r := startServerWith(t, Config{DataDir: dir, AgentCapacity: map[string]string{"cpu": "4", "mem": "4g"}, IdleTimeout: -1})
	r.ok(t, "run", "--name", "keep", "-c", `open("state.txt", "w").write("41")`, "python")
	info := r.waitStatus(t, "keep", events.StatusRunning)
	workDir := filepath.Join(dir, "agent", "kernels", info.MainKernelID)
	if m := mountedUnder(t, dir); len(m) != 1 || m[0] != workDir {
		t.Skipf("the kernel's work dir is not a mount here (no sandbox?): %v", m)
	}
	r.stop()

	if m := mountedUnder(t, dir); len(m) != 1 || m[0] != workDir {
		t.Fatalf("after a clean stop: mounts %v, want the kernel's work dir kept", m)
	}
	var kernelCg []string
	for _, cg := range baiCgroups(t, dir) {
		if filepath.Base(cg) == info.MainKernelID {
			kernelCg = append(kernelCg, cg)
			if n := procsIn(t, cg); n != 0 {
				t.Errorf("kernel cgroup %s holds %d processes after a clean stop", cg, n)
			}
		}
	}
	if len(kernelCg) == 0 {
		t.Logf("no cgroup for the kernel (cgroups unavailable here)")
	}

	r2 := startServerWith(t, Config{DataDir: dir, AgentCapacity: map[string]string{"cpu": "4", "mem": "4g"}, IdleTimeout: -1})
	if again := r2.waitStatus(t, "keep", events.StatusRunning); again.ID != info.ID {
		t.Fatalf("after restart: %+v", again)
	}
	if out := r2.ok(t, "run", "--name", "keep", "-c", `print(int(open("state.txt").read()) + 1)`, "python"); out != "42\n" {
		t.Fatalf("the adopted kernel printed %q", out)
	}
	r2.ok(t, "rm", "keep")
	r2.waitStatus(t, info.ID, events.StatusTerminated)
	r2.stop()

	if m := mountedUnder(t, dir); len(m) != 0 {
		t.Errorf("mounts left after the last session ended and a clean stop: %v", m)
	}
	if cgs := baiCgroups(t, dir); len(cgs) != 0 {
		t.Errorf("cgroups left after the last session ended and a clean stop: %v", cgs)
	}
}
