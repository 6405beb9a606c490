package server

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bai-sh/bai/internal/natstest"
	"github.com/bai-sh/bai/pkg/events"
	"github.com/bai-sh/bai/tools/bai/cli"
	"github.com/bai-sh/bai/tools/bai/client"
)

// running is one all-in-one server started by a test.
type running struct {
	srv  *Server
	stop func()
}

// startServer runs the all-in-one server on dataDir and a free port until
// the test ends (or stop is called).
func startServer(t *testing.T, dataDir string) *running {
	t.Helper()
	return startServerWith(t, Config{DataDir: dataDir, AgentCapacity: map[string]string{"cpu": "4", "mem": "4g"}})
}

// startServerWith runs the all-in-one server with cfg (DataDir defaults to
// a fresh t.TempDir(); Listen is always a free loopback port) until the
// test ends (or stop is called). The kernels its agent keeps for a next
// start are destroyed at the end.
func startServerWith(t *testing.T, cfg Config) *running {
	t.Helper()
	if cfg.DataDir == "" {
		cfg.DataDir = t.TempDir()
	}
	cfg.Listen = "127.0.0.1:-1"
	srv, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	purgeAgentKernels(t, cfg.DataDir)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	select {
	case <-srv.Ready():
	case err := <-done:
		cancel()
		t.Fatalf("server: %v", err)
	case <-time.After(30 * time.Second):
		cancel()
		t.Fatal("server not ready")
	}
	var stopped bool
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("server Run: %v", err)
		}
		// Every service ran within its permissions (package perms).
		if n := srv.violations.Load(); n > 0 {
			t.Errorf("the services hit %d NATS permissions violations", n)
		}
	}
	t.Cleanup(stop)
	return &running{srv: srv, stop: stop}
}

// bai runs the CLI in process against r with the credentials in env.
func (r *running) bai(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	c := r.srv.Credentials()
	var out, errb bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	code = cli.Run(ctx, append([]string{"bai"}, args...), &out, &errb,
		cli.Env{NATSURL: r.srv.ClientURL(), AccessKey: c.AccessKey, SecretKey: c.SecretKey})
	return code, out.String(), errb.String()
}

func (r *running) client(t *testing.T) *client.Client {
	t.Helper()
	c := r.srv.Credentials()
	cl, err := client.Connect(context.Background(), client.Options{URL: r.srv.ClientURL(), AccessKey: c.AccessKey, SecretKey: c.SecretKey})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

// list returns every session of the admin key in any status.
func (r *running) list(t *testing.T) []events.SessionInfo {
	t.Helper()
	resp, err := r.client(t).List(context.Background(), events.ListRequest{Statuses: events.AllStatuses, Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	return resp.Sessions
}

// waitStatus polls the registry until session ref has status want.
func (r *running) waitStatus(t *testing.T, ref string, want events.Status) events.SessionInfo {
	t.Helper()
	cl := r.client(t)
	var info *events.SessionInfo
	natstest.CheckFor(t, 20*time.Second, 10*time.Millisecond, func() error {
		var err error
		info, err = cl.Get(context.Background(), ref)
		if err != nil {
			return err
		}
		if info.Status != want {
			return fmt.Errorf("session %s is %s, want %s", ref, info.Status, want)
		}
		return nil
	})
	return *info
}

func TestHelloWorld(t *testing.T) {
	r := startServer(t, t.TempDir())
	code, out, errOut := r.bai(t, "run", "--rm", "-c", `print("hello world")`, "python")
	if code != 0 || out != "hello world\n" {
		t.Fatalf("run: code %d stdout %q stderr %q", code, out, errOut)
	}
	sessions := r.list(t)
	if len(sessions) != 1 {
		t.Fatalf("%d sessions, want 1", len(sessions))
	}
	r.waitStatus(t, sessions[0].ID, events.StatusTerminated)
	natstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		code, out, _ := r.bai(t, "ps", "--dead")
		if code != 0 || !strings.Contains(out, sessions[0].ID) || !strings.Contains(out, "TERMINATED") {
			return fmt.Errorf("ps --dead: %d %q", code, out)
		}
		return nil
	})
}

// TestRunNetworkFlag: a session has no network unless bai run asks for
// one with --network: only then does it reach a port on the host.
func TestRunNetworkFlag(t *testing.T) {
	r := startServer(t, t.TempDir())
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	connect := fmt.Sprintf(`
import socket
s = socket.socket()
s.settimeout(2)
try:
    s.connect(("127.0.0.1", %d))
    print("connected")
except OSError:
    print("refused")
`, ln.Addr().(*net.TCPAddr).Port)
	code, out, errOut := r.bai(t, "run", "--rm", "-c", connect, "python")
	if code != 0 {
		t.Fatalf("run: code %d stdout %q stderr %q", code, out, errOut)
	}
	if out != "refused\n" {
		t.Skipf("SKIP: the agent here has no sandbox (not root?): a kernel without --network %s", out)
	}
	code, out, errOut = r.bai(t, "run", "--rm", "--network", "-c", connect, "python")
	if code != 0 || out != "connected\n" {
		t.Fatalf("run --network: code %d stdout %q stderr %q", code, out, errOut)
	}
}

func TestErrorExitCodeAndTraceback(t *testing.T) {
	r := startServer(t, t.TempDir())
	code, out, errOut := r.bai(t, "run", "--rm", "-c", `print(1/0)`, "python")
	if code == 0 || out != "" || !strings.Contains(errOut, "ZeroDivisionError") || !strings.Contains(errOut, "Traceback") {
		t.Fatalf("run: code %d stdout %q stderr %q", code, out, errOut)
	}
	code, _, _ = r.bai(t, "run", "--rm", "-c", `import sys; sys.exit(7)`, "python")
	if code != 7 {
		t.Fatalf("sys.exit(7) gave %d", code)
	}
}

// lifecycle is the whole ordered history of a session started and removed.
var lifecycle = []events.Name{
	events.EventEnqueued, events.EventScheduled, events.EventPreparing, events.EventPrepared,
	events.EventCreating, events.EventKernelStarted, events.EventStarted, events.EventTerminateRequest,
	events.EventTerminating, events.EventKernelExited, events.EventTerminated,
}

func eventNames(t *testing.T, out string) []events.Name {
	t.Helper()
	var names []events.Name
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		name, payload, ok := strings.Cut(line, " ")
		var ev events.Event
		if !ok || json.Unmarshal([]byte(payload), &ev) != nil || string(ev.Name) != name {
			t.Fatalf("bad events line %q", line)
		}
		names = append(names, ev.Name)
	}
	return names
}

func TestEventsAndRmOfRunningSession(t *testing.T) {
	r := startServer(t, t.TempDir())
	code, out, errOut := r.bai(t, "start", "python")
	id := strings.TrimSpace(out)
	if code != 0 || !events.ValidToken(id) {
		t.Fatalf("start: %d %q %q", code, out, errOut)
	}
	r.waitStatus(t, id, events.StatusRunning)

	// Follow it live from before the rm to its end.
	type result struct {
		code int
		out  string
	}
	live := make(chan result, 1)
	go func() {
		code, out, _ := r.bai(t, "events", id)
		live <- result{code, out}
	}()
	// Whether the follower attaches before or after the rm, it must print
	// the whole sequence once: history and live meet without a gap.
	if code, out, errOut := r.bai(t, "rm", id); code != 0 {
		t.Fatalf("rm: %d %q %q", code, out, errOut)
	}
	info := r.waitStatus(t, id, events.StatusTerminated)
	if info.StatusInfo != string(events.ReasonUserRequested) || info.TerminatedAt == nil {
		t.Fatalf("terminated session: %+v", info)
	}
	res := <-live
	if res.code != 0 {
		t.Fatalf("events (live): %d %q", res.code, res.out)
	}
	// After the end, history alone gives the same sequence.
	code, out, _ = r.bai(t, "events", id)
	if code != 0 {
		t.Fatalf("events: %d", code)
	}
	for name, got := range map[string][]events.Name{"live": eventNames(t, res.out), "after": eventNames(t, out)} {
		if fmt.Sprint(got) != fmt.Sprint(lifecycle) {
			t.Errorf("%s events:\n got %v\nwant %v", name, got, lifecycle)
		}
	}
	// rm of a session that has ended is an error naming it.
	code, _, errOut = r.bai(t, "rm", id)
	if code != 1 || !strings.Contains(errOut, "already TERMINATED") {
		t.Fatalf("second rm: %d %q", code, errOut)
	}
}

func TestRestartKeepsSessions(t *testing.T) {
	dir := t.TempDir()
	r := startServer(t, dir)
	if code, _, errOut := r.bai(t, "run", "--rm", "-c", "print(1)", "python"); code != 0 {
		t.Fatalf("run: %d %q", code, errOut)
	}
	before := r.list(t)
	r.waitStatus(t, before[0].ID, events.StatusTerminated)
	creds := r.srv.Credentials()
	r.stop()

	info, err := os.Stat(filepath.Join(dir, client.CredentialsFileName))
	if err != nil || info.Mode().Perm() != 0o600 {
		t.Fatalf("credentials file: %v %v", info, err)
	}
	r2 := startServer(t, dir)
	if r2.srv.Credentials() != creds {
		t.Fatal("credentials changed across a restart")
	}
	after := r2.waitStatus(t, before[0].ID, events.StatusTerminated)
	if after.ID != before[0].ID || after.Name != before[0].Name {
		t.Fatalf("after restart: %+v", after)
	}
	code, out, _ := r2.bai(t, "events", before[0].ID)
	if code != 0 || !strings.Contains(out, "session_enqueued") || !strings.Contains(out, "session_terminated") {
		t.Fatalf("history after restart: %d %q", code, out)
	}
	// And it still runs new work.
	if code, out, _ := r2.bai(t, "run", "--rm", "-c", "print(2)", "python"); code != 0 || out != "2\n" {
		t.Fatalf("run after restart: %d %q", code, out)
	}
}

func TestCreateTwiceIsOneSession(t *testing.T) {
	r := startServer(t, t.TempDir())
	cl := r.client(t)
	req := events.CreateRequest{SessionID: client.NewID(), Image: "python", Name: "twice"}
	a, err := cl.Create(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	b, err := cl.Create(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	if a.SessionID != b.SessionID || !b.Duplicate {
		t.Fatalf("first %+v second %+v", a, b)
	}
	r.waitStatus(t, a.SessionID, events.StatusRunning)
	if n := len(r.list(t)); n != 1 {
		t.Fatalf("%d sessions, want 1", n)
	}
}

func TestBadInputChangesNothing(t *testing.T) {
	r := startServer(t, t.TempDir())
	cases := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"unknown image", []string{"run", "--rm", "-c", "print(1)", "cobol"}, 4, `unknown image "cobol"`},
		{"malformed slot", []string{"run", "-r", "mem=8x", "-c", "print(1)", "python"}, 4, "mem"},
		{"empty code", []string{"run", "--rm", "-c", "", "python"}, 4, "code"},
		{"unknown session events", []string{"events", "no-such-session"}, 1, "not found"},
		{"unknown session rm", []string{"rm", "no-such-session"}, 1, "not found"},
		{"bad session id", []string{"events", "a.b"}, 4, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			code, _, errOut := r.bai(t, c.args...)
			if code != c.code || !strings.Contains(errOut, c.want) || strings.Count(strings.TrimSpace(errOut), "\n") != 0 {
				t.Fatalf("code %d (want %d) stderr %q", code, c.code, errOut)
			}
		})
	}
	if n := len(r.list(t)); n != 0 {
		t.Fatalf("bad input created %d sessions", n)
	}
	t.Run("unreachable server", func(t *testing.T) {
		var out, errb bytes.Buffer
		code := cli.Run(context.Background(), []string{"bai", "ps"}, &out, &errb,
			cli.Env{NATSURL: "nats://127.0.0.1:1", AccessKey: "AKIA0000000000000000", SecretKey: "x"})
		if code != 1 || !strings.Contains(errb.String(), "cannot reach the bai server at nats://127.0.0.1:1") {
			t.Fatalf("code %d stderr %q", code, errb.String())
		}
	})
	t.Run("wrong secret", func(t *testing.T) {
		var out, errb bytes.Buffer
		code := cli.Run(context.Background(), []string{"bai", "ps"}, &out, &errb,
			cli.Env{NATSURL: r.srv.ClientURL(), AccessKey: r.srv.Credentials().AccessKey, SecretKey: "wrong"})
		if code != 1 || !strings.Contains(strings.ToLower(errb.String()), "auth") {
			t.Fatalf("code %d stderr %q", code, errb.String())
		}
	})
}
