package server

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/bai-sh/bai/internal/natstest"
	"github.com/bai-sh/bai/pkg/events"
	"github.com/bai-sh/bai/tools/bai/cli"
)

var updateGolden = flag.Bool("update", false, "rewrite the golden files in testdata/")

var (
	reUUID   = regexp.MustCompile(`[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}`)
	reTime   = regexp.MustCompile(`\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)`)
	reSpaces = regexp.MustCompile(`  +`)
	reSecs   = regexp.MustCompile(`"(remaining|threshold)":[0-9.e+]+`)
)

// normalize replaces what changes from run to run (ids, times, the keys,
// the agent's id) and the column padding that follows from them.
func (r *running) normalize(t *testing.T, out string) string {
	t.Helper()
	out = strings.ReplaceAll(out, r.srv.Credentials().AccessKey, "<AK>")
	out = strings.ReplaceAll(out, strings.ToLower(r.srv.Credentials().AccessKey), "<ak>")
	for _, s := range r.list(t) {
		if s.AgentID != "" {
			out = strings.ReplaceAll(out, s.AgentID, "<AGENT>")
		}
	}
	out = reUUID.ReplaceAllString(out, "<ID>")
	out = reTime.ReplaceAllString(out, "<TIME>")
	out = reSecs.ReplaceAllString(out, `"$1":<S>`)
	return reSpaces.ReplaceAllString(out, "  ")
}

func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *updateGolden {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if got != string(want) {
		t.Errorf("%s differs:\n--- got\n%s--- want\n%s", name, got, want)
	}
}

// baiEnv runs the CLI in process against r with env (credentials and URL
// filled in).
func (r *running) baiEnv(t *testing.T, env cli.Env, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	c := r.srv.Credentials()
	env.NATSURL, env.AccessKey, env.SecretKey = r.srv.ClientURL(), c.AccessKey, c.SecretKey
	var out, errb bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	code = cli.Run(ctx, append([]string{"bai"}, args...), &out, &errb, env)
	return code, out.String(), errb.String()
}

// ok runs bai and fails the test unless it exits 0.
func (r *running) ok(t *testing.T, args ...string) string {
	t.Helper()
	code, out, errOut := r.bai(t, args...)
	if code != 0 {
		t.Fatalf("bai %s: exit %d\nstdout %q\nstderr %q", strings.Join(args, " "), code, out, errOut)
	}
	return out
}

// TestCLIListings checks every listing mode of ps against golden files:
// a dead, a running and a pending session, then past ten.
func TestCLIListings(t *testing.T) {
	r := startServerWith(t, Config{AgentCapacity: map[string]string{"cpu": "4", "mem": "4g"}, IdleTimeout: -1})
	r.ok(t, "run", "--rm", "--name", "done-1", "-c", `print("out"); import sys; print("err", file=sys.stderr)`, "python")
	r.waitStatus(t, "done-1", events.StatusTerminated)
	r.ok(t, "start", "--name", "live-1", "--tag", "t1", "python")
	// It fits the agent, but not beside live-1: it waits (a request no
	// agent could ever hold would be refused at admission).
	r.ok(t, "run", "--enqueue-only", "--name", "queued-1", "-r", "cpu=4", "python")
	r.waitStatus(t, "queued-1", events.StatusPending)
	// The scheduler says why it waits: wait for that too, so the listings
	// are the same on every run.
	cl := r.client(t)
	natstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		info, err := cl.Get(context.Background(), "queued-1")
		if err != nil || !strings.HasPrefix(info.StatusInfo, string(events.ReasonNoAgent)+": cpu short on the one agent (free cpu=") {
			return fmt.Errorf("queued-1 status info %v %v", info, err)
		}
		return nil
	})

	all := strings.Join(events.SessionFields, ",")
	for _, c := range []struct {
		file string
		args []string
	}{
		{"ps_default.golden", []string{"ps"}},
		{"ps_admin_session_list.golden", []string{"admin", "session", "list"}},
		{"ps_name_only.golden", []string{"ps", "--name-only"}},
		{"ps_detail.golden", []string{"ps", "--detail"}},
		{"ps_format_all.golden", []string{"ps", "-f", all, "-s", "PENDING,RUNNING,TERMINATED"}},
		{"ps_running.golden", []string{"ps", "--running"}},
		{"ps_dead.golden", []string{"ps", "--dead"}},
		{"ps_status_pending.golden", []string{"ps", "-s", "pending"}},
		{"ps_json_format.golden", []string{"ps", "--output", "json", "-f", "name,status,group_name,user_email"}},
		{"info.golden", []string{"info", "live-1"}},
	} {
		t.Run(c.file, func(t *testing.T) {
			golden(t, c.file, r.normalize(t, r.ok(t, c.args...)))
		})
	}

	t.Run("json", func(t *testing.T) {
		var list events.ListResponse
		if err := json.Unmarshal([]byte(r.ok(t, "ps", "--output", "json")), &list); err != nil {
			t.Fatal(err)
		}
		if list.Total != 2 || !list.Admin || len(list.Sessions) != 2 || list.Sessions[0].Name != "queued-1" ||
			list.Sessions[1].UserEmail != "admin@bai.local" || list.Sessions[1].GroupID == "" {
			t.Fatalf("ps --output json: %+v", list)
		}
		var info events.SessionInfo
		if err := json.Unmarshal([]byte(r.ok(t, "info", "--output", "json", "done-1")), &info); err != nil {
			t.Fatal(err)
		}
		if info.Status != events.StatusTerminated || info.TerminatedAt == nil || len(info.AgentIDs) != 1 {
			t.Fatalf("info --output json: %+v", info)
		}
	})

	t.Run("logs", func(t *testing.T) {
		code, out, errOut := r.bai(t, "logs", "done-1")
		if code != 0 || out != "out\n" || errOut != "err\n" {
			t.Fatalf("logs: %d %q %q", code, out, errOut)
		}
		var logs events.LogsResponse
		if err := json.Unmarshal([]byte(r.ok(t, "logs", "--output", "json", "done-1")), &logs); err != nil {
			t.Fatal(err)
		}
		var stdout string
		for _, ch := range logs.Chunks {
			if ch.Stream == events.StreamStdout {
				stdout += ch.Data
			}
		}
		last := logs.Chunks[len(logs.Chunks)-1]
		if stdout != "out\n" || last.Stream != events.StreamExit || last.ExitCode == nil || *last.ExitCode != 0 {
			t.Fatalf("logs --output json: %+v", logs)
		}
	})

	t.Run("errors", func(t *testing.T) {
		for _, c := range []struct {
			args []string
			code int
			want string
		}{
			{[]string{"ps", "-f", "id,bogus"}, 4, `unknown field "bogus" (valid fields: id, main_kernel_id,`},
			{[]string{"ps", "--detail", "--name-only"}, 2, "at most one of"},
			{[]string{"ps", "-s", "SLEEPING"}, 4, `unknown status "SLEEPING"`},
			{[]string{"ps", "--access-key", "a.b"}, 4, "invalid access key"},
			{[]string{"info", "nope"}, 1, "not found"},
			{[]string{"logs", "nope"}, 1, "not found"},
			{[]string{"run", "--max-wait", "soon", "-c", "1", "python"}, 4, "--max-wait"},
		} {
			code, _, errOut := r.bai(t, c.args...)
			if code != c.code || !strings.Contains(errOut, c.want) {
				t.Errorf("bai %v: exit %d (want %d) stderr %q", c.args, code, c.code, errOut)
			}
		}
	})

	// Past ten: the default shows ten and says so; --all shows every one.
	for i := range 11 {
		r.ok(t, "run", "--enqueue-only", "--name", fmt.Sprintf("q-%02d", i), "-r", "cpu=4", "python")
	}
	natstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if n := len(r.list(t)); n != 14 {
			return fmt.Errorf("%d sessions", n)
		}
		return nil
	})
	golden(t, "ps_past_ten.golden", r.normalize(t, r.ok(t, "ps", "-f", "name,status")))
	golden(t, "ps_all.golden", r.normalize(t, r.ok(t, "ps", "--all", "-f", "name,status")))
	// On a terminal, --all goes through the pager; with none (cat, "")
	// or off a terminal, it prints straight.
	allOut := r.normalize(t, r.ok(t, "ps", "--all", "-f", "name,status"))
	for _, c := range []struct {
		env  cli.Env
		want string
	}{
		{cli.Env{Terminal: true, Pager: "sed 's/^/| /'"}, "| " + strings.ReplaceAll(strings.TrimSuffix(allOut, "\n"), "\n", "\n| ") + "\n"},
		{cli.Env{Terminal: true, Pager: "cat"}, allOut},
		{cli.Env{Terminal: true}, allOut},
		{cli.Env{Pager: "sed 's/^/| /'"}, allOut},
	} {
		code, out, errOut := r.baiEnv(t, c.env, "ps", "--all", "-f", "name,status")
		if code != 0 || errOut != "" || r.normalize(t, out) != c.want {
			t.Fatalf("ps --all, terminal %v, pager %q: %d %q %q", c.env.Terminal, c.env.Pager, code, out, errOut)
		}
	}
	// A terminal 160 wide: the table keeps what fits, Name, Session ID
	// and Status always; --wide and output elsewhere keep every column.
	code, narrow, _ := r.baiEnv(t, cli.Env{Terminal: true, Width: 160}, "ps")
	_, wide, _ := r.baiEnv(t, cli.Env{Terminal: true, Width: 160}, "ps", "--wide")
	if code != 0 || wide != r.ok(t, "ps") || !strings.HasPrefix(narrow, "Name ") {
		t.Fatalf("ps on a terminal 160 wide: %d\n%s\n--wide:\n%s", code, narrow, wide)
	}
	for _, l := range strings.Split(strings.TrimSuffix(narrow, "\n"), "\n") {
		if len(strings.TrimRight(l, " ")) > 160 {
			t.Fatalf("ps on a terminal 160 wide printed a line of %d: %q", len(l), l)
		}
	}
	for _, title := range []string{"Session ID", "Status", "Status Info", "Image"} {
		if !strings.Contains(narrow, title) {
			t.Fatalf("ps on a terminal 160 wide has no %s:\n%s", title, narrow)
		}
	}
	if strings.Contains(narrow, "Main Kernel ID") || !strings.Contains(wide, "Main Kernel ID") {
		t.Fatalf("ps 100 wide:\n%s\n--wide:\n%s", narrow, wide)
	}
	golden(t, "ps_limit_offset.golden", r.normalize(t, r.ok(t, "ps", "--limit", "3", "--offset", "11", "--name-only")))
	golden(t, "ps_own_access_key.golden", r.normalize(t, r.ok(t, "ps", "--access-key", r.srv.Credentials().AccessKey, "--name-only", "--limit", "2")))
}

// TestCLIReuseAndIdleTimeout: run with a live session's name runs the code
// in it (its files are there), --no-reuse refuses, and an idle session is
// terminated with reason idle-timeout.
func TestCLIReuseAndIdleTimeout(t *testing.T) {
	r := startServerWith(t, Config{AgentCapacity: map[string]string{"cpu": "4", "mem": "4g"}, IdleTimeout: 5 * time.Second})
	r.ok(t, "run", "--name", "keep", "-c", `open("state.txt", "w").write("41")`, "python")
	first := r.waitStatus(t, "keep", events.StatusRunning)
	if out := r.ok(t, "run", "--name", "keep", "-c", `print(int(open("state.txt").read()) + 1)`, "python"); out != "42\n" {
		t.Fatalf("reused run printed %q", out)
	}
	second := r.waitStatus(t, "keep", events.StatusRunning)
	if second.ID != first.ID || first.LastActivity == nil || second.LastActivity == nil || !second.LastActivity.After(*first.LastActivity) {
		t.Fatalf("reuse: first %+v second %+v", first, second)
	}
	if ic, ok := second.IdleChecks["idle_timeout"].(map[string]any); !ok || ic["threshold"] != 5.0 {
		t.Fatalf("idle_checks: %+v", second.IdleChecks)
	}
	if n := len(r.list(t)); n != 1 {
		t.Fatalf("%d sessions, want 1", n)
	}
	code, _, errOut := r.bai(t, "run", "--no-reuse", "--name", "keep", "-c", "print(1)", "python")
	if code != 1 || !strings.Contains(errOut, "--no-reuse") {
		t.Fatalf("--no-reuse: %d %q", code, errOut)
	}
	code, _, errOut = r.bai(t, "run", "--name", "keep", "-c", "print(1)", "python:3.11")
	if code != 0 {
		t.Fatalf("reuse through an alias of the same image: %d %q", code, errOut)
	}

	// Left alone, it ends by the idle timeout.
	natstest.CheckFor(t, 20*time.Second, 50*time.Millisecond, func() error {
		info, err := r.client(t).Get(context.Background(), "keep")
		if err != nil {
			return err
		}
		if info.Status != events.StatusTerminated || info.StatusInfo != string(events.ReasonIdleTimeout) {
			return fmt.Errorf("session is %s (%s)", info.Status, info.StatusInfo)
		}
		return nil
	})
	// The name is free again: a new run makes a new session.
	if out := r.ok(t, "run", "--rm", "--name", "keep", "-c", "print(7)", "python"); out != "7\n" {
		t.Fatalf("run after idle timeout: %q", out)
	}
	if n := len(r.list(t)); n != 2 {
		t.Fatalf("%d sessions, want 2", n)
	}
}

// TestCLIQueueing: with no free capacity, --enqueue-only returns at once,
// --max-wait gives up with exit 3 leaving the session queued, and rm
// cancels pending sessions and terminates running ones, per id.
func TestCLIQueueing(t *testing.T) {
	r := startServerWith(t, Config{AgentCapacity: map[string]string{"cpu": "1", "mem": "1g"}, IdleTimeout: -1})
	busy := strings.TrimSpace(r.ok(t, "start", "--name", "busy", "python"))

	// On a terminal it shows where it waits.
	code, _, errOut := r.baiEnv(t, cli.Env{Terminal: true}, "run", "--max-wait", "0.5", "--name", "waits", "-c", `print("never")`, "python")
	if code != 3 || !strings.Contains(errOut, "stays queued") || !strings.Contains(errOut, "\r\033[Kqueued (position 1)\n") {
		t.Fatalf("--max-wait: %d %q", code, errOut)
	}
	r.waitStatus(t, "waits", events.StatusPending)
	// Follow its events from while it waits until it ends: the same
	// sequence as its history afterwards.
	type result struct {
		code     int
		out, err string
	}
	live := make(chan result, 1)
	go func() {
		code, out, errOut := r.bai(t, "events", "waits")
		live <- result{code, out, errOut}
	}()
	code, _, errOut = r.bai(t, "start", "--max-wait", "100ms", "python")
	if code != 3 || !strings.Contains(errOut, "did not start within 100ms") {
		t.Fatalf("start --max-wait: %d %q", code, errOut)
	}

	queued := strings.TrimSpace(r.ok(t, "run", "--enqueue-only", "-c", `print("ignored")`, "python"))
	if !events.ValidToken(queued) {
		t.Fatalf("--enqueue-only printed %q", queued)
	}
	r.waitStatus(t, queued, events.StatusPending)

	// One rm: a pending id, a running name, a bad one and an unknown one.
	code, out, errOut := r.bai(t, "rm", queued, "busy", "no-such", "a.b")
	if code != 1 || strings.Count(errOut, "\n") != 2 || !strings.Contains(errOut, "no-such not found") ||
		!strings.Contains(out, queued+"): cancelled") || !strings.Contains(out, "busy ("+busy+"): terminating") {
		t.Fatalf("rm: %d %q %q", code, out, errOut)
	}
	r.waitStatus(t, queued, events.StatusCancelled)
	r.waitStatus(t, busy, events.StatusTerminated)
	// Capacity is free: the session --max-wait left queued now runs, and
	// without its code (it was never sent).
	r.waitStatus(t, "waits", events.StatusRunning)
	code, out, _ = r.bai(t, "logs", "waits")
	if code != 0 || out != "" {
		t.Fatalf("logs of the session --max-wait left: %d %q", code, out)
	}
	var res runResult
	if err := json.Unmarshal([]byte(r.ok(t, "run", "--output", "json", "--rm", "--name", "waits", "-c", `print("now")`, "python")), &res); err != nil {
		t.Fatal(err)
	}
	if res.Stdout != "now\n" || res.ExitCode != 0 || res.SessionID == "" {
		t.Fatalf("run --output json in it: %+v", res)
	}
	got := <-live
	if got.code != 0 {
		t.Fatalf("events: %d %q", got.code, got.err)
	}
	after := r.ok(t, "events", "waits")
	want := []events.Name{events.EventEnqueued, events.EventScheduled, events.EventPreparing, events.EventPrepared,
		events.EventCreating, events.EventKernelStarted, events.EventStarted, events.EventExecuteRequest,
		events.EventTerminateRequest, events.EventTerminating, events.EventKernelExited, events.EventTerminated}
	// Live and after are the same, once each; apart from why it waited
	// (session_pending_info, as often as the reason changed), the
	// lifecycle is the one expected.
	if live, hist := eventNames(t, got.out), eventNames(t, after); fmt.Sprint(live) != fmt.Sprint(hist) {
		t.Errorf("live events differ from the history:\n live %v\n hist %v", live, hist)
	}
	var names []events.Name
	for _, n := range eventNames(t, after) {
		if n != events.EventPendingInfo {
			names = append(names, n)
		}
	}
	if fmt.Sprint(names) != fmt.Sprint(want) {
		t.Errorf("events:\n got %v\nwant %v", names, want)
	}
}

// runResult is run's --output json.
type runResult struct {
	SessionID string `json:"session_id"`
	ExitCode  int    `json:"exit_code"`
	Stdout    string `json:"stdout"`
}

// TestCLIUploadExec: run --exec uploads FILEs into the work directory,
// keeping their relative paths, and runs the command there; files that
// would leave the tree are refused and change nothing.
func TestCLIUploadExec(t *testing.T) {
	r := startServerWith(t, Config{AgentCapacity: map[string]string{"cpu": "4", "mem": "4g"}, IdleTimeout: -1})
	dir := t.TempDir()
	outside := t.TempDir()
	for path, body := range map[string]string{
		"myscript.py":      "import sys\nprint(sys.argv[1:], open('sub/data.txt').read().strip())\n",
		"sub/data.txt":     "payload\n",
		"../secret.txt":    "no",
		"../../secret.txt": "no",
	} {
		p := filepath.Join(dir, path)
		if strings.HasPrefix(path, "..") {
			p = filepath.Join(outside, "secret.txt")
		}
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink(filepath.Join(outside, "secret.txt"), filepath.Join(dir, "link.txt")); err != nil {
		t.Fatal(err)
	}
	t.Chdir(dir)

	out := r.ok(t, "run", "--rm", "--exec", "python3 myscript.py arg1 arg2", "python", "./myscript.py", "sub/data.txt")
	if out != "['arg1', 'arg2'] payload\n" {
		t.Fatalf("run --exec: %q", out)
	}
	// Without --exec or -c, the first file runs.
	if out := r.ok(t, "run", "--rm", "python", "myscript.py", "sub/data.txt"); out != "[] payload\n" {
		t.Fatalf("run FILE: %q", out)
	}
	before := len(r.list(t))
	for _, c := range []struct {
		file, want string
	}{
		{"link.txt", "symlink out of the current directory"},
		{filepath.Join(outside, "secret.txt"), "absolute path"},
		{"../x.txt", "leaves the current directory"},
		{"sub", "not a regular file"},
	} {
		code, _, errOut := r.bai(t, "run", "--rm", "--exec", "cat "+c.file, "python", c.file)
		if code != 4 || !strings.Contains(errOut, c.want) {
			t.Errorf("run with %s: %d %q", c.file, code, errOut)
		}
	}
	if n := len(r.list(t)); n != before {
		t.Fatalf("refused uploads created %d sessions", n-before)
	}
}

// TestCLIImageAliases: admin image list shows the seeded table; an alias
// set by the admin is usable at once and survives a restart.
func TestCLIImageAliases(t *testing.T) {
	dir := t.TempDir()
	r := startServer(t, dir)
	golden(t, "image_list.golden", r.ok(t, "admin", "image", "list"))
	code, _, errOut := r.bai(t, "admin", "image", "alias", "py", "cobol:85")
	if code != 4 || !strings.Contains(errOut, `unknown image "cobol:85"`) {
		t.Fatalf("alias to an unknown image: %d %q", code, errOut)
	}
	if code, _, errOut := r.bai(t, "admin", "image", "alias", "py"); code != 2 || !strings.Contains(errOut, "ALIAS TARGET") {
		t.Fatalf("alias without a target: %d %q", code, errOut)
	}
	r.ok(t, "admin", "image", "alias", "py", "python:3.11-debian12")
	if out := r.ok(t, "run", "--rm", "-c", "print(3)", "py"); out != "3\n" {
		t.Fatalf("run with the alias: %q", out)
	}
	r.stop()
	r2 := startServer(t, dir)
	var list events.ImageListResponse
	if err := json.Unmarshal([]byte(r2.ok(t, "admin", "image", "list", "--output", "json")), &list); err != nil {
		t.Fatal(err)
	}
	if len(list.Images) != 1 || !strings.Contains(strings.Join(list.Images[0].Aliases, ","), "py") {
		t.Fatalf("after restart: %+v", list)
	}
}

// TestCLIOwnerAndAccessKey: the admin creates a session for another key
// (--owner) and lists it with --access-key; its own list does not show it.
func TestCLIOwnerAndAccessKey(t *testing.T) {
	r := startServerWith(t, Config{AgentCapacity: map[string]string{"cpu": "1", "mem": "1g"}, IdleTimeout: -1})
	const other = "AKIAOTHER00000000000"
	id := strings.TrimSpace(r.ok(t, "run", "--owner", other, "--name", "theirs", "--starts-at", "24h", "-c", "print(1)", "python"))
	if !events.ValidToken(id) {
		t.Fatalf("run --owner printed %q", id)
	}
	natstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		out := r.ok(t, "ps", "--access-key", other, "-f", "id,name,access_key,user_email,status")
		if !strings.Contains(out, id+"  theirs  "+other+"  "+strings.ToLower(other)+"@bai.local  PENDING") {
			return fmt.Errorf("ps --access-key: %q", out)
		}
		return nil
	})
	if out := r.ok(t, "ps", "--name-only"); out != "" {
		t.Fatalf("the admin's own list shows %q", out)
	}
	// --owner naming oneself is an ordinary run; on a terminal it shows
	// its progress up to running, and -q shows none.
	code, out, errOut := r.baiEnv(t, cli.Env{Terminal: true}, "run", "--rm", "--owner", r.srv.Credentials().AccessKey, "-c", "print(5)", "python")
	if code != 0 || out != "5\n" || !strings.HasSuffix(errOut, "\r\033[Kcreating\r\033[Krunning\n") {
		t.Fatalf("run --owner self: %d %q %q", code, out, errOut)
	}
	code, out, errOut = r.baiEnv(t, cli.Env{Terminal: true}, "run", "-q", "--rm", "-c", "print(6)", "python")
	if code != 0 || out != "6\n" || errOut != "" {
		t.Fatalf("run -q: %d %q %q", code, out, errOut)
	}
}

// TestCLITiming: $BAI_TIMING makes bai print where a run's time went,
// one line on stderr, its steps in order; a bad value is a usage error
// that makes no session.
func TestCLITiming(t *testing.T) {
	r := startServerWith(t, Config{AgentCapacity: map[string]string{"cpu": "4", "mem": "4g"}, IdleTimeout: -1})
	steps := func(t *testing.T, stderr string) ([]string, []float64) {
		t.Helper()
		st, err := cli.ParseTiming(stderr)
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		var ms []float64
		for _, s := range st {
			if len(ms) > 0 && s.MS < ms[len(ms)-1] {
				t.Fatalf("%s=%v before the step ahead of it: %q", s.Name, s.MS, stderr)
			}
			names, ms = append(names, s.Name), append(ms, s.MS)
		}
		return names, ms
	}
	code, out, errOut := r.baiEnv(t, cli.Env{Timing: "1"}, "run", "--rm", "-c", "print(1)", "python")
	if code != 0 || out != "1\n" {
		t.Fatalf("run --rm: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	names, ms := steps(t, errOut)
	if want := "main connected accepted first-output exit removed end"; strings.Join(names, " ") != want {
		t.Fatalf("run --rm steps %v, want %s", names, want)
	}
	if ms[0] > 1000 {
		t.Fatalf("with BAI_TIMING=1, main is at %v ms", ms[0])
	}

	// An exec into a live session; the start given in Unix nanoseconds
	// counts from then.
	r.ok(t, "run", "--name", "live", "-c", "print(0)", "python")
	start := time.Now().Add(-50 * time.Millisecond)
	code, out, errOut = r.baiEnv(t, cli.Env{Timing: fmt.Sprint(start.UnixNano())}, "run", "--name", "live", "-c", "print(2)", "python")
	if code != 0 || out != "2\n" {
		t.Fatalf("exec: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	names, ms = steps(t, errOut)
	if want := "main connected accepted first-output exit end"; strings.Join(names, " ") != want {
		t.Fatalf("exec steps %v, want %s", names, want)
	}
	if ms[0] < 50 {
		t.Fatalf("main at %v ms of a start 50 ms before", ms[0])
	}

	before := len(r.list(t))
	for _, bad := range []string{"soon", "0", "-5", fmt.Sprint(time.Now().Add(time.Hour).UnixNano()), fmt.Sprint(time.Now().Add(-2 * time.Hour).UnixNano())} {
		code, out, errOut := r.baiEnv(t, cli.Env{Timing: bad}, "run", "--name", "bad-timing", "-c", "print(3)", "python")
		if code != cli.ExitUsage || out != "" || !strings.Contains(errOut, "BAI_TIMING") || strings.Contains(errOut, "bai-timing:") {
			t.Errorf("BAI_TIMING=%q: exit %d, stdout %q, stderr %q", bad, code, out, errOut)
		}
	}
	if n := len(r.list(t)); n != before {
		t.Fatalf("%d sessions after the refused runs, %d before", n, before)
	}
}
