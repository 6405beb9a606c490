package server

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/bai-sh/bai/internal/natstest"
	"github.com/bai-sh/bai/pkg/events"
)

// smallDisk mounts a tmpfs of size bytes for the test (root only).
func smallDisk(t *testing.T, size string) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("mounting a small disk needs root")
	}
	dir := filepath.Join(t.TempDir(), "disk")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size="+size); err != nil {
		t.Skipf("mount a tmpfs: %v", err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, syscall.MNT_DETACH); err != nil {
			t.Errorf("unmount the small disk: %v", err)
		}
	})
	return dir
}

// fill writes a file in dir until the disk is full.
func fill(t *testing.T, dir string) string {
	t.Helper()
	path := filepath.Join(dir, "filler")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	chunk := make([]byte, 1<<20)
	for {
		if _, err := f.Write(chunk); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("fill: %v", err)
			}
			break
		}
	}
	// The last bytes, smaller than a chunk.
	for {
		if _, err := f.Write(chunk[:4096]); err != nil {
			break
		}
	}
	return path
}

// TestFullDisk fills the server's disk under a running session: a create
// is refused at once as out of disk space (before: "context deadline
// exceeded" after 10 s), the server log says so, the scheduler declares no
// agent lost though heartbeats cannot be stored (before: every running
// session ended as agent-lost), and once the file is deleted creates work
// again without a restart (before: only a restart helped), and the
// running session is still RUNNING and runs code.
func TestFullDisk(t *testing.T) {
	disk := smallDisk(t, "96m")
	var logs natstest.SyncBuffer
	r := startServerWith(t, Config{
		DataDir: disk, AgentCapacity: map[string]string{"cpu": "4", "mem": "4g"}, IdleTimeout: -1,
		OutputMaxBytes: 8 << 20, MinFreeDisk: 8 << 20, AgentHeartbeat: 200 * time.Millisecond,
		Log: zerolog.New(&logs),
	})
	r.ok(t, "run", "--name", "live", "-c", `open("state.txt", "w").write("41")`, "python")
	live := r.waitStatus(t, "live", events.StatusRunning)

	filler := fill(t, disk)
	start := time.Now()
	code, out, errOut := r.bai(t, "run", "--rm", "-c", "print(1)", "python")
	if code == 0 || !strings.Contains(errOut, "out of disk space") {
		t.Fatalf("create on a full disk: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	t.Logf("refused in %s: %s", time.Since(start).Round(time.Millisecond), strings.TrimSpace(errOut))
	natstest.CheckFor(t, 10*time.Second, 50*time.Millisecond, func() error {
		if !strings.Contains(logs.String(), "out_of_disk_space") {
			return errors.New("no out_of_disk_space in the server log")
		}
		return nil
	})
	// The agent's heartbeats are not stored: past the scheduler's agent
	// timeout it looks, finds the bucket cannot store, and waits.
	natstest.CheckFor(t, 40*time.Second, 100*time.Millisecond, func() error {
		if !strings.Contains(logs.String(), "agents_not_judged") {
			return errors.New("the scheduler did not yet look at the silent agent")
		}
		return nil
	})
	if info := r.waitStatus(t, live.ID, events.StatusRunning); info.StatusInfo != live.StatusInfo {
		t.Fatalf("running session after the disk filled: %+v", info)
	}

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	natstest.CheckFor(t, 60*time.Second, 200*time.Millisecond, func() error {
		code, out, errOut := r.bai(t, "run", "--rm", "-c", "print(2)", "python")
		if code != 0 || out != "2\n" {
			return errors.New("create after space was freed: " + out + errOut)
		}
		return nil
	})
	if out := r.ok(t, "run", "--name", "live", "-c", `print(int(open("state.txt").read()) + 1)`, "python"); out != "42\n" {
		t.Fatalf("the running session after the disk was freed printed %q", out)
	}
	if info := r.waitStatus(t, live.ID, events.StatusRunning); info.ID != live.ID {
		t.Fatalf("running session: %+v", info)
	}
	for _, ev := range []string{"agent-lost", "agent_lost"} {
		if strings.Contains(logs.String(), ev) {
			t.Errorf("the log mentions %s", ev)
		}
	}
	t.Logf("jetstream restarted: %v", strings.Contains(logs.String(), "jetstream_restarted"))
	if os.Getenv("H5_DUMP") != "" {
		t.Log(logs.String())
	}
}

// TestStartOnASmallDisk: with too little space for the output stream's
// reservation the server says what it needs; with a smaller reservation it
// starts.
func TestStartOnASmallDisk(t *testing.T) {
	disk := smallDisk(t, "64m")
	srv, err := New(Config{DataDir: disk, Listen: "127.0.0.1:-1", OutputMaxBytes: 1 << 30})
	if err != nil {
		t.Fatal(err)
	}
	err = srv.Run(t.Context())
	if err == nil || !strings.Contains(err.Error(), "--output-max-bytes") || !strings.Contains(err.Error(), "free at least") {
		t.Fatalf("start with a 1 GiB output stream on a 64 MiB disk: %v", err)
	}
	t.Log(err)
	r := startServerWith(t, Config{DataDir: disk, AgentCapacity: map[string]string{"cpu": "4", "mem": "4g"}, OutputMaxBytes: 16 << 20, MinFreeDisk: 4 << 20})
	if code, out, errOut := r.bai(t, "run", "--rm", "-c", "print(1)", "python"); code != 0 || out != "1\n" {
		t.Fatalf("run on a small disk: %d %q %q", code, out, errOut)
	}
}
