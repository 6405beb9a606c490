package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"
)

// cgroupJoinAfterQuiet times what an execution's helper does first: the
// join of a cgroup (a write of a pid to cgroup.procs), n times, each after
// quiet with no join on the host (from this bench). Without favordynmods
// on the cgroup2 mount, such a join waits for an RCU grace period
// (services/agent/cgroupmount.go). The cgroup is the pids hierarchy's (v1)
// or the unified one's (v2), made and removed here.
func cgroupJoinAfterQuiet(n int, quiet time.Duration) ([]time.Duration, error) {
	base := "/sys/fs/cgroup"
	if _, err := os.Stat(filepath.Join(base, "cgroup.controllers")); err != nil {
		base = filepath.Join(base, "pids")
	}
	dir := filepath.Join(base, fmt.Sprintf("bai-bench-join-%d", os.Getpid()))
	if err := os.Mkdir(dir, 0o755); err != nil {
		return nil, err
	}
	defer os.Remove(dir)
	var ds []time.Duration
	for range n {
		cmd := exec.Command("/bin/sleep", "60")
		if err := cmd.Start(); err != nil {
			return nil, err
		}
		time.Sleep(quiet)
		t0 := time.Now()
		err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(strconv.Itoa(cmd.Process.Pid)), 0)
		d := time.Since(t0)
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if err != nil {
			return nil, err
		}
		ds = append(ds, d)
	}
	return ds, nil
}
