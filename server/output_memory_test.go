package server

import (
	"bytes"
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/bai-sh/bai/internal/natstest"
	"github.com/bai-sh/bai/pkg/events"
	"github.com/bai-sh/bai/tools/bai/client"
)

// TestWatcherOutputMemoryIsBounded runs code printing 24 MB while the
// watcher's caller reads nothing: the watcher keeps at most
// MaxQueuedBytes of it in memory (the rest on disk), and then delivers
// all of it, in order.
func TestWatcherOutputMemoryIsBounded(t *testing.T) {
	r := startServer(t, t.TempDir())
	cl := r.client(t)
	sid := client.NewID()
	w, err := cl.WatchOwn(sid)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	w.FromStart("big")
	const lines, width = 240_000, 100 // 24 MB
	code := fmt.Sprintf("import sys\nfor i in range(%d):\n    sys.stdout.write('%%099d\\n' %% i)\n", lines)
	if _, err := cl.Create(context.Background(), events.CreateRequest{Image: "python", SessionID: sid,
		Run: &events.RunSpec{ID: "big", Code: code}}); err != nil {
		t.Fatal(err)
	}
	maxMem := int64(0)
	natstest.CheckFor(t, 120*time.Second, 20*time.Millisecond, func() error {
		mem, disk := w.Queued()
		maxMem = max(maxMem, mem)
		if mem > client.MaxQueuedBytes+64<<10 {
			t.Fatalf("%d bytes of output queued in memory, bound %d", mem, client.MaxQueuedBytes)
		}
		if mem+disk < lines*width {
			return fmt.Errorf("%d bytes queued (%d on disk)", mem+disk, disk)
		}
		return nil
	})
	_, disk := w.Queued()
	t.Logf("24 MB unread: at most %d bytes in memory, %d on disk", maxMem, disk)
	var out bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for {
		it, err := w.Next(ctx)
		if err != nil {
			t.Fatalf("after %d bytes: %v", out.Len(), err)
		}
		if it.Err != nil {
			t.Fatalf("after %d bytes: %v", out.Len(), it.Err)
		}
		if it.Output == nil || it.Output.RunID != "big" {
			continue
		}
		if it.Output.Stream == events.StreamExit {
			if it.Output.ExitCode != 0 {
				t.Fatalf("exit %d", it.Output.ExitCode)
			}
			break
		}
		out.Write(it.Output.Data)
	}
	if out.Len() != lines*width {
		t.Fatalf("%d bytes of output, want %d", out.Len(), lines*width)
	}
	for i, line := range bytes.Split(bytes.TrimSuffix(out.Bytes(), []byte("\n")), []byte("\n")) {
		if want := fmt.Sprintf("%099d", i); string(line) != want {
			t.Fatalf("line %d is %.20q..., want %.20q...", i, line, want)
		}
	}
	if mem, disk := w.Queued(); mem != 0 || disk != 0 {
		t.Errorf("after reading all: %d bytes in memory, %d on disk", mem, disk)
	}
}
