package agent_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/bai-sh/bai/internal/natstest"
	"github.com/bai-sh/bai/pkg/events"
	"github.com/bai-sh/bai/pkg/events/streams"
	"github.com/bai-sh/bai/services/agent"
)

// TestDamagedStateDB damages the agent's state db while it is stopped with
// kernels running; the next start never panics (before: a bbolt assertion
// on every start), sets the file aside, keeps the kernels whose records
// could be read (they run code again, their files intact) and takes new
// work, at an epoch above the one before.
func TestDamagedStateDB(t *testing.T) {
	const kernels = 6
	// kept: how many kernel records survive (-2: any number).
	for _, tc := range []struct {
		name   string
		damage func(t *testing.T, path string)
		kept   int
	}{
		{"truncated to half its pages", func(t *testing.T, path string) {
			if err := os.Truncate(path, pagesSize(t, path)/2); err != nil {
				t.Fatal(err)
			}
		}, -2},
		{"garbage in one kernel's record", func(t *testing.T, path string) { spoilRecord(t, path, `"main_kernel_id":"k-d4"`) }, kernels - 1},
		{"garbage over the kernels page", func(t *testing.T, path string) { overwriteRoot(t, path, "kernels") }, 0},
		{"both meta pages overwritten", func(t *testing.T, path string) { garbageAt(t, path, 0, 2*4096) }, 0},
		{"zero length", func(t *testing.T, path string) {
			if err := os.Truncate(path, 0); err != nil {
				t.Fatal(err)
			}
		}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			dir := t.TempDir()
			cfg := agent.Config{DataDir: dir, ID: "agent-d", Capacity: map[string]string{"cpu": "8", "mem": "16g"}}
			a := e.start(cfg)
			var specs []*events.SessionSpec
			for i := range kernels {
				sp := spec(fmt.Sprintf("d%d", i))
				sp.Run = &events.RunSpec{ID: "w", Code: fmt.Sprintf(`open("f.txt", "w").write("kernel %d")`, i)}
				e.schedule(a, sp)
				specs = append(specs, sp)
			}
			for _, sp := range specs {
				e.waitExit(sp.ID, "w")
			}
			before := heartbeatEpoch(t, e)
			a.stop()
			path := filepath.Join(dir, "agent.db")
			tc.damage(t, path)

			b := e.start(cfg)
			if aside, _ := filepath.Glob(path + ".damaged-*"); len(aside) != 1 {
				t.Errorf("set aside: %v, want one", aside)
			}
			if after := heartbeatEpoch(t, e); after <= before {
				t.Errorf("epoch %d after the damage, %d before", after, before)
			}
			kept := 0
			for i, sp := range specs {
				// Its record lost: the kernel is an orphan, destroyed.
				if _, err := os.Stat(workDir(dir, sp.MainKernelID)); os.IsNotExist(err) {
					continue
				}
				kept++
				e.execute(b, sp, events.RunSpec{ID: "r", Code: `print(open("f.txt").read())`})
				if o := e.waitExit(sp.ID, "r"); string(o.stdout) != fmt.Sprintf("kernel %d\n", i) || o.exit != "0" {
					t.Errorf("kernel %d after restart: %q %q %s", i, o.stdout, o.stderr, o.exit)
				}
			}
			if tc.kept >= 0 && kept != tc.kept {
				t.Errorf("%d of %d kernels kept, want %d", kept, kernels, tc.kept)
			}
			t.Logf("%d of %d kernels kept", kept, kernels)
			// It takes new work.
			sp := spec("fresh")
			sp.Run = &events.RunSpec{ID: "r", Code: `print("fresh")`}
			e.schedule(b, sp)
			if o := e.waitExit(sp.ID, "r"); string(o.stdout) != "fresh\n" {
				t.Errorf("new kernel: %q %q", o.stdout, o.stderr)
			}
		})
	}
}

// heartbeatEpoch is agent-d's epoch in its heartbeat.
func heartbeatEpoch(t *testing.T, e *env) uint64 {
	t.Helper()
	kv, err := e.js.KeyValue(context.Background(), streams.Agents)
	if err != nil {
		t.Fatal(err)
	}
	var epoch uint64
	natstest.CheckFor(t, wait, step, func() error {
		en, err := kv.Get(context.Background(), "agent-d")
		if err != nil {
			return err
		}
		var info events.AgentInfo
		if err := events.Unmarshal(en.Value(), &info); err != nil {
			return err
		}
		epoch = info.Epoch
		return nil
	})
	return epoch
}

// spoilRecord writes bytes that are not JSON over the file's first
// occurrence of what.
func spoilRecord(t *testing.T, path, what string) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	i := bytes.Index(data, []byte(what))
	if i < 0 {
		t.Fatalf("%s not in the file", what)
	}
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(bytes.Repeat([]byte{0xff}, len(what)), int64(i)); err != nil {
		t.Fatal(err)
	}
}

// pagesSize is the bytes the file's meta page counts.
func pagesSize(t *testing.T, path string) int64 {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var n int64
	_ = db.View(func(tx *bolt.Tx) error {
		n = tx.Size()
		return nil
	})
	return n
}

// overwriteRoot fills the root page of bucket with random bytes.
func overwriteRoot(t *testing.T, path, bucket string) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	var id uint64
	size := db.Info().PageSize
	_ = db.View(func(tx *bolt.Tx) error {
		id = uint64(tx.Bucket([]byte(bucket)).Root())
		return nil
	})
	_ = db.Close()
	if id < 2 {
		t.Fatalf("bucket %s is inline (root page %d): more records needed", bucket, id)
	}
	garbageAt(t, path, int64(id)*int64(size), size)
}

func garbageAt(t *testing.T, path string, off int64, n int) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, n)
	_, _ = rand.Read(b)
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}
