package agent_test

import (
	"bytes"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/bai-sh/bai/internal/natstest"
	"github.com/bai-sh/bai/pkg/events"
	"github.com/bai-sh/bai/services/agent"
)

// filesAsGateway asks agent a for a file chunk or a listing as the
// gateway does (on its service inbox), returning the answer's error
// (an *events.APIError) or decoding it into resp.
func filesAsGateway(t *testing.T, nc *nats.Conn, a *runningAgent, verb string, req events.AgentFilesRequest, resp any) error {
	t.Helper()
	subj, err := events.AgentFilesSubject(a.ID(), verb)
	if err != nil {
		t.Fatal(err)
	}
	data, _ := events.Marshal(req)
	msg, err := nc.Request(subj, data, 10*time.Second)
	if err != nil {
		t.Fatalf("%s %s: %v", verb, req.Path, err)
	}
	if err := events.ErrorFromHeader(map[string][]string(msg.Header)); err != nil {
		return err
	}
	if err := events.Unmarshal(msg.Data, resp); err != nil {
		t.Fatalf("%s %s: %v", verb, req.Path, err)
	}
	return nil
}

// TestAgentFilesOut: the agent reads a running kernel's files a chunk at
// a time and lists its directories; every path through or to a symlink
// the kernel planted (to a host file, a directory, dangling,
// /proc/self/root) is refused or listed as a symlink, never followed; a
// fifo and a directory are refused, a file past 64 MiB too; a request
// for another key's session, or one whose reply is not the gateway's
// inbox, gets nothing.
func TestAgentFilesOut(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	s := newSentinel(t)
	a := e.start(agent.Config{DataDir: t.TempDir(), ID: "agent-1"})
	sp := spec("files")
	e.schedule(a, sp)
	e.waitEvent(sp.ID, events.EventStarted)
	plant := fmt.Sprintf(`set -e
printf hello > a.txt
mkdir -p sub/deep
head -c 1200000 /dev/urandom > sub/deep/big.bin
ln -s %q tofile
ln -s %q todir
ln -s %q dangling
ln -s %q procroot
ln -s %q sub/up
mkfifo fifo
truncate -s 65M huge.bin
sha256sum sub/deep/big.bin | cut -c1-64
`, filepath.Join(s.dir, "file"), filepath.Join(s.dir, "dir"), filepath.Join(s.dir, "none"),
		"/proc/self/root"+filepath.Join(s.dir, "file"), "../../../../../../../../.."+s.dir)
	e.execute(a, sp, events.RunSpec{ID: "plant", Exec: plant})
	o := e.waitExit(sp.ID, "plant")
	if o.exit != "0" {
		t.Fatalf("plant: exit %s, stderr %s", o.exit, o.stderr)
	}
	gw := natstest.Connect(t, e.s, nats.CustomInboxPrefix(events.ServiceInboxPrefix("gateway")))
	req := func(path string, off int64) events.AgentFilesRequest {
		return events.AgentFilesRequest{AccessKey: testAK, SessionID: sp.ID, KernelID: sp.MainKernelID, Path: path, Offset: off}
	}

	t.Run("download", func(t *testing.T) {
		var r events.DownloadResponse
		if err := filesAsGateway(t, gw, a, events.AgentFilesRead, req("a.txt", 0), &r); err != nil {
			t.Fatal(err)
		}
		if string(r.Data) != "hello" || r.Size != 5 || !r.EOF || r.Path != "a.txt" || r.MTime.IsZero() {
			t.Errorf("a.txt: %+v", r)
		}
		// A nested file past one chunk comes in chunks.
		var all []byte
		for off := int64(0); ; {
			var r events.DownloadResponse
			if err := filesAsGateway(t, gw, a, events.AgentFilesRead, req("sub/deep/big.bin", off), &r); err != nil {
				t.Fatal(err)
			}
			if len(r.Data) > events.MaxDownloadChunk || r.Offset != off || r.Size != 1200000 {
				t.Fatalf("chunk at %d: %d bytes, offset %d size %d", off, len(r.Data), r.Offset, r.Size)
			}
			all = append(all, r.Data...)
			off += int64(len(r.Data))
			if r.EOF {
				break
			}
		}
		e.execute(a, sp, events.RunSpec{ID: "same", Exec: "cat sub/deep/big.bin"})
		if o := e.waitExit(sp.ID, "same"); !bytes.Equal(o.stdout, all) {
			t.Errorf("big.bin: %d bytes downloaded, differ from the kernel's %d", len(all), len(o.stdout))
		}
	})

	t.Run("refused", func(t *testing.T) {
		for path, want := range map[string]string{
			"tofile":          "a symlink is in the path",
			"todir/inner":     "a symlink is in the path",
			"dangling":        "a symlink is in the path",
			"procroot":        "a symlink is in the path",
			"sub/up/file":     "a symlink is in the path",
			"fifo":            "not a regular file",
			"sub":             "not a regular file",
			"huge.bin":        "too large to download",
			"missing.txt":     "no such file",
			"../x":            "must be clean",
			"/etc/passwd":     "is absolute",
			"a.txt/../a.txt":  "must be clean",
			"sub/deep/\nx.sh": "control character",
		} {
			var r events.DownloadResponse
			err := filesAsGateway(t, gw, a, events.AgentFilesRead, req(path, 0), &r)
			if err == nil || !strings.Contains(err.Error(), want) || strings.Contains(err.Error(), s.dir) && !strings.HasPrefix(path, "/") {
				t.Errorf("download %q: %v, want %q", path, err, want)
			}
			if bytes.Contains(r.Data, []byte("SENTINEL")) {
				t.Errorf("download %q read the sentinel", path)
			}
		}
		s.unchanged(t, "after downloads")
	})

	t.Run("ls", func(t *testing.T) {
		var r events.FilesResponse
		if err := filesAsGateway(t, gw, a, events.AgentFilesList, req("", 0), &r); err != nil {
			t.Fatal(err)
		}
		got := map[string]events.FileInfo{}
		var names []string
		for _, f := range r.Files {
			got[f.Name] = f
			names = append(names, f.Name)
		}
		if !strings.Contains(strings.Join(names, " "), "a.txt dangling fifo huge.bin procroot sub todir tofile") {
			t.Errorf("ls: %v", names)
		}
		if f := got["a.txt"]; f.Type != events.FileRegular || f.Size != 5 || f.Mode != "-rw-r--r--" {
			t.Errorf("a.txt: %+v", f)
		}
		if f := got["sub"]; f.Type != events.FileDir {
			t.Errorf("sub: %+v", f)
		}
		if f := got["tofile"]; f.Type != events.FileSymlink || f.Target != filepath.Join(s.dir, "file") {
			t.Errorf("tofile: %+v", f)
		}
		if f := got["todir"]; f.Type != events.FileSymlink || f.Mode != "lrwxrwxrwx" {
			t.Errorf("todir: %+v", f)
		}
		if f := got["fifo"]; f.Type != events.FileOther || f.Mode != "prw-r--r--" {
			t.Errorf("fifo: %+v", f)
		}
		var sub events.FilesResponse
		if err := filesAsGateway(t, gw, a, events.AgentFilesList, req("sub", 0), &sub); err != nil {
			t.Fatal(err)
		}
		if len(sub.Files) != 2 || sub.Files[0].Name != "deep" || sub.Files[1].Name != "up" || sub.Files[1].Type != events.FileSymlink {
			t.Errorf("ls sub: %+v", sub.Files)
		}
		var one events.FilesResponse
		if err := filesAsGateway(t, gw, a, events.AgentFilesList, req("todir", 0), &one); err != nil ||
			len(one.Files) != 1 || one.Files[0].Type != events.FileSymlink {
			t.Errorf("ls of a symlink: %+v %v, want the link itself", one.Files, err)
		}
		for _, p := range []string{"todir/x", "sub/up", "sub/up/dir"} {
			var r events.FilesResponse
			err := filesAsGateway(t, gw, a, events.AgentFilesList, req(p, 0), &r)
			if p == "sub/up" {
				if err != nil || len(r.Files) != 1 || r.Files[0].Type != events.FileSymlink {
					t.Errorf("ls %s: %+v %v", p, r.Files, err)
				}
				continue
			}
			if err == nil || !strings.Contains(err.Error(), "a symlink is in the path") {
				t.Errorf("ls %s: %+v %v, want refused", p, r.Files, err)
			}
		}
	})

	t.Run("others", func(t *testing.T) {
		for name, r := range map[string]events.AgentFilesRequest{
			"another key":     {AccessKey: "AKOTHER", SessionID: sp.ID, KernelID: sp.MainKernelID, Path: "a.txt"},
			"another kernel":  {AccessKey: testAK, SessionID: sp.ID, KernelID: "k-other", Path: "a.txt"},
			"another session": {AccessKey: testAK, SessionID: "nope", Path: "a.txt"},
		} {
			var resp events.DownloadResponse
			if err := filesAsGateway(t, gw, a, events.AgentFilesRead, r, &resp); err == nil || !strings.Contains(err.Error(), "is not running") {
				t.Errorf("%s: %+v %v", name, resp, err)
			}
		}
		// A reply subject other than the gateway's inbox: no answer. The
		// agent answers in order, so once a later request is answered
		// the refused one was handled.
		plain := natstest.Connect(t, e.s)
		sub, err := plain.SubscribeSync("_INBOX.stolen")
		if err != nil {
			t.Fatal(err)
		}
		subj, _ := events.AgentFilesSubject(a.ID(), events.AgentFilesRead)
		data, _ := events.Marshal(req("a.txt", 0))
		if err := plain.PublishRequest(subj, "_INBOX.stolen", data); err != nil {
			t.Fatal(err)
		}
		if err := plain.Flush(); err != nil {
			t.Fatal(err)
		}
		var r events.DownloadResponse
		if err := filesAsGateway(t, gw, a, events.AgentFilesRead, req("a.txt", 0), &r); err != nil {
			t.Fatal(err)
		}
		if m, err := sub.NextMsg(100 * time.Millisecond); err == nil {
			t.Errorf("answered a foreign reply subject: %s %q", m.Subject, m.Data)
		}
	})

	t.Run("terminated", func(t *testing.T) {
		e.terminate(a, sp, events.ReasonUserRequested)
		e.waitEvent(sp.ID, events.EventTerminated)
		var r events.DownloadResponse
		if err := filesAsGateway(t, gw, a, events.AgentFilesRead, req("a.txt", 0), &r); err == nil {
			t.Errorf("download after terminate: %+v", r)
		}
	})
}

// TestAgentFilesOutNeedsProcessRuntime: a runtime without a work
// directory on the host (sim here, docker alike) answers a clear error.
func TestAgentFilesOutNeedsProcessRuntime(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	a := e.start(agent.Config{DataDir: t.TempDir(), ID: "agent-sim", Sim: &agent.SimConfig{ExecDelay: time.Hour}})
	sp := spec("simfiles")
	e.schedule(a, sp)
	e.waitEvent(sp.ID, events.EventStarted)
	gw := natstest.Connect(t, e.s, nats.CustomInboxPrefix(events.ServiceInboxPrefix("gateway")))
	for _, verb := range []string{events.AgentFilesRead, events.AgentFilesList} {
		// session_started is published just before the agent counts
		// the kernel running: ask until it does.
		natstest.CheckFor(t, wait, step, func() error {
			var r events.FilesResponse
			err := filesAsGateway(t, gw, a, verb, events.AgentFilesRequest{AccessKey: testAK, SessionID: sp.ID, KernelID: sp.MainKernelID, Path: "a.txt"}, &r)
			if err == nil || !strings.Contains(err.Error(), "need the process runtime") {
				return fmt.Errorf("%s on sim: %v", verb, err)
			}
			return nil
		})
	}
}
