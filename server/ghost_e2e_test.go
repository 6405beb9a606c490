package server

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bai-sh/bai/internal/natstest"
	"github.com/bai-sh/bai/pkg/events"
	"github.com/bai-sh/bai/tools/bai/client"
)

// serverProc is a bai-server binary run as a real process.
type serverProc struct {
	cmd *exec.Cmd
	log *natstest.SyncBuffer
}

// buildServer builds bai-server once per test.
func buildServer(t *testing.T) string {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skipf("SKIP: no go tool to build bai-server: %v", err)
	}
	bin := filepath.Join(t.TempDir(), "bai-server")
	if out, err := exec.Command(goBin, "build", "-o", bin, "./cmd/bai-server").CombinedOutput(); err != nil {
		t.Fatalf("build bai-server: %v\n%s", err, out)
	}
	return bin
}

// startServerProc starts bai-server on dataDir and a free port and
// returns a client connected to it once the server says it is ready (every
// service serves: the registry answering is not enough, the gateway may
// still be starting) and answers (the credentials file names a URL other
// than notURL: this start's).
func startServerProc(t *testing.T, bin, dataDir, notURL string) (*serverProc, *client.Client, string) {
	t.Helper()
	log := &natstest.SyncBuffer{}
	cmd := exec.Command(bin, "-data-dir", dataDir, "-listen", "127.0.0.1:-1", "-log-level", "warn")
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &serverProc{cmd: cmd, log: log}
	var cl *client.Client
	var url string
	natstest.CheckFor(t, 60*time.Second, 50*time.Millisecond, func() error {
		if cmd.ProcessState != nil {
			t.Fatalf("bai-server exited:\n%s", log.String())
		}
		c, err := client.ReadCredentials(client.CredentialsPath(dataDir))
		if err != nil {
			return err
		}
		if c.NATSURL == notURL {
			return errors.New("credentials of the server before")
		}
		if cl == nil {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			cl, err = client.Connect(ctx, client.Options{URL: c.NATSURL, AccessKey: c.AccessKey, SecretKey: c.SecretKey})
			if err != nil {
				return err
			}
		}
		url = c.NATSURL
		if !strings.Contains(log.String(), "bai server ready on "+url) {
			return errors.New("bai-server has not said it is ready")
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_, err = cl.List(ctx, events.ListRequest{Limit: 1})
		return err
	})
	t.Cleanup(cl.Close)
	return p, cl, url
}

func (p *serverProc) stop(t *testing.T, sig syscall.Signal) {
	t.Helper()
	_ = p.cmd.Process.Signal(sig)
	_ = p.cmd.Wait()
}

// TestLostAgentStateEndsItsSessions runs sessions on a real bai-server,
// kills it -9, deletes its agent's state db and starts it again. The
// agent kills the kernels it has no record of; every one of those
// sessions ends (TERMINATED, kernel-lost) without anyone touching it; an
// execution asked in one meanwhile fails at once, not after a wait.
func TestLostAgentStateEndsItsSessions(t *testing.T) {
	if testing.Short() {
		t.Skip("SKIP: builds and kills bai-server (not in -short)")
	}
	bin := buildServer(t)
	dir := t.TempDir()
	purgeAgentKernels(t, dir)
	p, cl, url := startServerProc(t, bin, dir, "")
	ctx := context.Background()
	const n = 6
	var ids []string
	for i := range n {
		resp, err := cl.Create(ctx, events.CreateRequest{Image: "python", Name: fmt.Sprintf("ghost-%d", i),
			Slots: []string{"cpu=0.1", "mem=64m"}})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, resp.SessionID)
	}
	natstest.CheckFor(t, 60*time.Second, 50*time.Millisecond, func() error {
		for _, id := range ids {
			info, err := cl.Get(ctx, id)
			if err != nil {
				return err
			}
			if info.Status != events.StatusRunning {
				return fmt.Errorf("session %s is %s", id, info.Status)
			}
		}
		return nil
	})
	p.stop(t, syscall.SIGKILL)
	if err := os.Remove(filepath.Join(dir, "agent", "agent.db")); err != nil {
		t.Fatal(err)
	}

	p, cl, _ = startServerProc(t, bin, dir, url)
	t.Cleanup(func() {
		p.stop(t, syscall.SIGTERM)
		if t.Failed() {
			t.Logf("restarted server's log:\n%s", p.log.String())
		}
	})
	// An execution asked now fails at once: refused by the gateway once
	// the session ended, else answered by the agent (exit 127).
	w, err := cl.WatchOwn(ids[0])
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	w.FromStart("late")
	if _, err := cl.Execute(ctx, events.ExecuteRequest{SessionID: ids[0], Run: events.RunSpec{ID: "late", Code: "print(1)"}}); err == nil {
		ectx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		var stderr strings.Builder
		for {
			it, err := w.Next(ectx)
			if err != nil {
				t.Fatalf("no answer to a run in a lost kernel: %v", err)
			}
			if it.Output == nil {
				continue
			}
			if it.Output.Stream == events.StreamStderr {
				stderr.Write(it.Output.Data)
			}
			if it.Output.Stream == events.StreamExit {
				if it.Output.ExitCode != 127 || !strings.Contains(stderr.String(), "no record of kernel") {
					t.Errorf("run in a lost kernel: exit %d, stderr %q", it.Output.ExitCode, stderr.String())
				}
				break
			}
		}
	} else if !errors.Is(err, events.ErrConflict) {
		t.Errorf("run in a lost kernel: %v", err)
	}
	// Every session ends, saying why.
	natstest.CheckFor(t, 60*time.Second, 50*time.Millisecond, func() error {
		for _, id := range ids {
			info, err := cl.Get(ctx, id)
			if err != nil {
				return err
			}
			if info.Status != events.StatusTerminated || info.StatusInfo != string(events.ReasonKernelLost) {
				return fmt.Errorf("session %s is %s (%s)", id, info.Status, info.StatusInfo)
			}
		}
		return nil
	})
}
