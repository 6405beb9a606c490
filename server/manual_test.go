package server

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bai-sh/bai/internal/natstest"
	"github.com/bai-sh/bai/pkg/events"
)

// The end-to-end tests of this file run the real bai binary, built once
// per test binary, against a real all-in-one server, as a user's shell
// does: through sh -c, with the server's credentials file named by
// BAI_CONFIG and nothing else of the environment.

var baiBin struct {
	once sync.Once
	path string
	err  error
}

// buildBai builds bin/bai once into a directory of the test binary's run.
func buildBai(t *testing.T) string {
	t.Helper()
	baiBin.once.Do(func() {
		dir, err := os.MkdirTemp("", "bai-e2e-bin-")
		if err != nil {
			baiBin.err = err
			return
		}
		baiBin.path = filepath.Join(dir, "bai")
		// As the Makefile builds it.
		cmd := exec.Command("go", "build", "-tags", "urfave_cli_no_docs", "-o", baiBin.path, "github.com/bai-sh/bai/tools/bai")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		out, err := cmd.CombinedOutput()
		if err != nil {
			baiBin.err = fmt.Errorf("go build bai: %v\n%s", err, out)
		}
	})
	if baiBin.err != nil {
		t.Fatal(baiBin.err)
	}
	return baiBin.path
}

// shell runs command lines with the built bai first on PATH, in a working
// directory, against one server.
type shell struct {
	r   *running
	dir string
	env []string
}

func newShell(t *testing.T, r *running) *shell {
	t.Helper()
	bin := buildBai(t)
	home := t.TempDir()
	return &shell{r: r, dir: t.TempDir(), env: []string{
		"PATH=" + filepath.Dir(bin) + ":/usr/local/bin:/usr/bin:/bin",
		"HOME=" + home,
		"BAI_CONFIG=" + r.srv.CredentialsPath(),
		"LANG=C.UTF-8",
	}}
}

// cmd is the command line as an *exec.Cmd of sh -c, output to buffers.
func (s *shell) cmd(line string, stdout, stderr *natstest.SyncBuffer) *exec.Cmd {
	c := exec.Command("/bin/sh", "-c", line)
	c.Dir, c.Env, c.Stdout, c.Stderr = s.dir, s.env, stdout, stderr
	return c
}

// sh runs a command line and returns its exit code and output.
func (s *shell) sh(t *testing.T, line string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb natstest.SyncBuffer
	c := s.cmd(line, &out, &errb)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	done := make(chan error, 1)
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { done <- c.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-ctx.Done():
		_ = c.Process.Kill()
		<-done
		t.Fatalf("%s: still running after 90s\nstdout %q\nstderr %q", line, out.String(), errb.String())
	}
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		code = ee.ExitCode()
	case err != nil:
		t.Fatalf("%s: %v", line, err)
	}
	return code, out.String(), errb.String()
}

// ok runs a command line and fails the test unless it exits 0.
func (s *shell) ok(t *testing.T, line string) string {
	t.Helper()
	code, out, errOut := s.sh(t, line)
	if code != 0 {
		t.Fatalf("%s: exit %d\nstdout %q\nstderr %q", line, code, out, errOut)
	}
	return out
}

// background starts a command line and returns its output buffers and a
// wait for its exit code.
func (s *shell) background(t *testing.T, line string) (stdout, stderr *natstest.SyncBuffer, wait func() int) {
	t.Helper()
	stdout, stderr = new(natstest.SyncBuffer), new(natstest.SyncBuffer)
	c := s.cmd(line, stdout, stderr)
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan int, 1)
	go func() {
		err := c.Wait()
		var ee *exec.ExitError
		switch {
		case errors.As(err, &ee):
			done <- ee.ExitCode()
		case err != nil:
			done <- -1
		default:
			done <- 0
		}
	}()
	t.Cleanup(func() {
		select {
		case <-done:
		default:
			_ = c.Process.Kill()
		}
	})
	return stdout, stderr, func() int {
		t.Helper()
		select {
		case code := <-done:
			return code
		case <-time.After(60 * time.Second):
			t.Fatalf("%s: still running after 60s\nstdout %q\nstderr %q", line, stdout.String(), stderr.String())
			return -1
		}
	}
}

// manualCommands are the command blocks of the manual page
// (testdata/compute-sessions.md, Backend.AI's "Compute Sessions"), each
// with its "\" continuations joined, and backend.ai made bai.
func manualCommands(t *testing.T) []string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", "compute-sessions.md"))
	if err != nil {
		t.Fatal(err)
	}
	var cmds []string
	for _, m := range regexp.MustCompile("(?s)```\n(.*?)```").FindAllStringSubmatch(string(data), -1) {
		line := regexp.MustCompile(`\\\n\s*`).ReplaceAllString(strings.TrimSpace(m[1]), "")
		if !strings.HasPrefix(line, "backend.ai ") {
			t.Fatalf("a block of the manual page is not a backend.ai command: %q", line)
		}
		cmds = append(cmds, "bai"+strings.TrimPrefix(line, "backend.ai"))
	}
	return cmds
}

// TestManualPage runs every example of the manual page as written there,
// with bai for backend.ai, against a server whose one agent offers what
// the examples ask (cpu=4, mem=8g, cuda.shares=2), the page's image tags
// aliased once by the admin; and the commands its prose names
// (--enqueue-only, --max-wait, events) on a session queued behind a busy
// one, which rm cancels.
func TestManualPage(t *testing.T) {
	r := startServerWith(t, Config{AgentCapacity: map[string]string{"cpu": "4", "mem": "8g", "cuda.shares": "2"}, IdleTimeout: -1})
	s := newShell(t, r)
	for _, f := range []struct{ name, body string }{
		{"myscript.py", "import sys\nprint('myscript', *sys.argv[1:])\n"},
		{"mygpucode.py", "print('gpu code ran')\n"},
	} {
		if err := os.WriteFile(filepath.Join(s.dir, f.name), []byte(f.body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// The admin's aliases for the page's image tags, which bai does not
	// ship: both run the python image.
	for _, alias := range []string{"python:3.6-ubuntu18.04", "python-tensorflow:1.12-py36"} {
		s.ok(t, "bai admin image alias "+alias+" python:3.11-debian12")
	}

	ran := map[string]bool{}
	run := func(line string) (int, string, string) {
		t.Helper()
		ran[line] = true
		return s.sh(t, line)
	}
	mustRun := func(line, wantOut string) {
		t.Helper()
		code, out, errOut := run(line)
		if code != 0 || out != wantOut {
			t.Fatalf("%s: exit %d, stdout %q (want %q), stderr %q", line, code, out, wantOut, errOut)
		}
	}

	// Running simple sessions.
	mustRun(`bai run --rm -c 'print("hello world")' python:3.6-ubuntu18.04`, "hello world\n")
	mustRun(`bai run --rm --exec 'python myscript.py arg1 arg2' python:3.6-ubuntu18.04 ./myscript.py`, "myscript arg1 arg2\n")
	// With accelerators: the agent offers cuda.shares (no device here:
	// the slot is a configured capacity).
	mustRun(`bai run --rm -r cpu=4 -r mem=8g -r cuda.shares=2 python-tensorflow:1.12-py36 ./mygpucode.py`, "gpu code ran\n")
	var gpu *events.SessionInfo
	for _, si := range r.list(t) {
		if si.Slots["cuda.shares"] != "" {
			gpu = &si
		}
	}
	if gpu == nil || gpu.Slots["cuda.shares"] != "2" || gpu.Slots["cpu"] != "4" || gpu.Slots["mem"] != "8g" {
		t.Fatalf("the accelerator session: %+v", gpu)
	}

	// A busy agent: one session holds every cpu, so the next ones queue.
	busy := strings.TrimSpace(s.ok(t, "bai start --name busy -r cpu=4 python:3.6-ubuntu18.04"))
	code, queued, errOut := run(`bai run --enqueue-only -c 'print("never")' python:3.6-ubuntu18.04`)
	queued = strings.TrimSpace(queued)
	if code != 0 || !events.ValidToken(queued) {
		t.Fatalf("--enqueue-only: exit %d %q %q", code, queued, errOut)
	}
	r.waitStatus(t, queued, events.StatusPending)
	code, _, errOut = run(`bai run --max-wait 1 --name waited -c 'print("never")' python:3.6-ubuntu18.04`)
	if code != 3 || !strings.Contains(errOut, "did not start within 1s; it stays queued") {
		t.Fatalf("--max-wait: exit %d %q", code, errOut)
	}
	waited := r.waitStatus(t, "waited", events.StatusPending).ID
	// events <sessionID> follows the queued session until rm cancels it.
	evOut, evErr, evWait := s.background(t, "bai events "+queued)
	ran["bai events <sessionID>"] = true
	natstest.CheckFor(t, 20*time.Second, 20*time.Millisecond, func() error {
		if !strings.Contains(evOut.String(), string(events.EventEnqueued)) {
			return fmt.Errorf("events printed %q", evOut.String())
		}
		return nil
	})

	// Listing sessions: the live ones, the most recently changed first.
	psOut := s.ok(t, "bai ps")
	ran["bai ps"] = true
	lines := strings.Split(strings.TrimSpace(psOut), "\n")
	rowOf := func(id string) string {
		for _, l := range lines[1:] {
			if strings.Contains(l, id) {
				return l
			}
		}
		return ""
	}
	if len(lines) != 4 || !regexp.MustCompile(`^Name\s+Owner Access Key\s+Session ID\s+`).MatchString(lines[0]) ||
		!strings.Contains(rowOf(waited), "PENDING") || !strings.Contains(rowOf(queued), "PENDING") ||
		!strings.HasPrefix(rowOf(busy), "busy ") || !strings.Contains(rowOf(busy), "RUNNING") {
		t.Fatalf("bai ps:\n%s", psOut)
	}
	// The same table (why a session waits may change in between).
	why := regexp.MustCompile(`queue-blocked\s*|no-available-agent\s*|\d{4}-\d\d-\d\dT\S+\s*`)
	same := func(out string) string {
		l := strings.Split(why.ReplaceAllString(out, "X "), "\n")
		sort.Strings(l)
		return strings.Join(l, "\n")
	}
	if out := s.ok(t, "bai admin session list"); same(out) != same(psOut) {
		t.Fatalf("admin session list differs from ps:\n%s\nvs\n%s", out, psOut)
	}
	ran["bai admin session list"] = true
	format := s.ok(t, "bai admin session list --format id,status,occupying_slots")
	ran["bai admin session list --format id,status,occupying_slots"] = true
	if !regexp.MustCompile(`(?m)^Session ID\s+Status\s+Occupying Slots$`).MatchString(format) ||
		!regexp.MustCompile(`(?m)^`+busy+`\s+RUNNING\s+\{"cpu":"4",`).MatchString(format) ||
		!regexp.MustCompile(`(?m)^`+queued+`\s+PENDING\s+\{"cpu":"1",`).MatchString(format) {
		t.Fatalf("--format id,status,occupying_slots:\n%s", format)
	}

	// Terminating or cancelling sessions: rm with several ids, pending
	// ones cancelled, the running one terminated.
	rmLine := "bai rm " + queued + " " + waited + " " + busy
	ran["bai rm <sessionID> [<sessionID>...]"] = true
	out := s.ok(t, rmLine)
	want := "session bai-" + queued[:8] + " (" + queued + "): cancelled\nsession waited (" + waited + "): cancelled\nsession busy (" + busy + "): terminating\n"
	if out != want {
		t.Fatalf("%s:\n%q\nwant %q", rmLine, out, want)
	}
	r.waitStatus(t, queued, events.StatusCancelled)
	r.waitStatus(t, waited, events.StatusCancelled)
	r.waitStatus(t, busy, events.StatusTerminated)
	if code := evWait(); code != 0 || !strings.Contains(evOut.String(), string(events.EventCancelled)+" ") {
		t.Fatalf("events: exit %d, stdout %q, stderr %q", code, evOut.String(), evErr.String())
	}
	if out := s.ok(t, "bai ps"); out != "There are no matching sessions.\n" {
		t.Fatalf("ps after rm: %q", out)
	}

	// Every block of the page ran.
	for _, line := range manualCommands(t) {
		if !ran[line] {
			t.Errorf("the manual's example %q was not run", line)
		}
	}
}

// TestBatchStartupCommand: bai run --type batch --startup-command runs the
// command as the session's own work, prints its output and exits with its
// code; the session then ends by itself. Bad combinations are refused
// before anything is created.
func TestBatchStartupCommand(t *testing.T) {
	r := startServerWith(t, Config{AgentCapacity: map[string]string{"cpu": "4", "mem": "4g"}, IdleTimeout: -1})
	s := newShell(t, r)
	code, out, errOut := s.sh(t, `bai run --type batch --name job --startup-command 'echo batch; python -c "print(6*7)"; echo oops >&2; exit 3' python`)
	if code != 3 || out != "batch\n42\n" || errOut != "oops\n" {
		t.Fatalf("batch run: exit %d %q %q", code, out, errOut)
	}
	info := r.waitStatus(t, "job", events.StatusTerminated)
	if info.Type != events.TypeBatch || info.StartupCommand == "" {
		t.Fatalf("batch session: %+v", info)
	}
	// start enqueues it and returns once it runs.
	id := strings.TrimSpace(s.ok(t, `bai start --type batch --startup-command 'echo started' python`))
	r.waitStatus(t, id, events.StatusTerminated)
	if out := s.ok(t, "bai logs "+id); out != "started\n" {
		t.Fatalf("logs of the started batch session: %q", out)
	}
	if err := os.WriteFile(filepath.Join(s.dir, "myscript.py"), []byte("print(1)\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	before := len(r.list(t))
	for _, c := range []struct{ line, want string }{
		{`bai run --type batch python`, "a batch session needs --startup-command"},
		{`bai run --startup-command 'true' python`, "--startup-command runs in a batch session only"},
		{`bai start --type interactive --startup-command 'true' python`, "--startup-command runs in a batch session only"},
		{`bai run --type batch --startup-command 'true' python myscript.py`, "gets no files"},
	} {
		code, _, errOut := s.sh(t, c.line)
		if code != 4 || !strings.Contains(errOut, c.want) {
			t.Errorf("%s: exit %d %q, want 4 and %q", c.line, code, errOut, c.want)
		}
	}
	if n := len(r.list(t)); n != before {
		t.Fatalf("refused commands created %d sessions", n-before)
	}
}

// TestLogsFollow: bai logs -f, started while a session's code runs, prints
// what the code printed before it attached and what it prints after, and
// exits 0 when the session ends.
func TestLogsFollow(t *testing.T) {
	r := startServerWith(t, Config{AgentCapacity: map[string]string{"cpu": "4", "mem": "4g"}, IdleTimeout: -1})
	s := newShell(t, r)
	s.ok(t, "bai start --name tick python")
	// The code prints, then waits for a file that a second run makes.
	code := `import os, time
print("before", flush=True)
while not os.path.exists("go"):
    time.sleep(0.01)
print("after", flush=True)`
	runOut, runErr, runWait := s.background(t, "bai run --name tick -c '"+code+"' python")
	natstest.CheckFor(t, 20*time.Second, 20*time.Millisecond, func() error {
		if out := s.ok(t, "bai logs tick"); out != "before\n" {
			return fmt.Errorf("logs: %q", out)
		}
		return nil
	})
	follow, followErr, followWait := s.background(t, "bai logs -f tick")
	natstest.CheckFor(t, 20*time.Second, 20*time.Millisecond, func() error {
		if follow.String() != "before\n" {
			return fmt.Errorf("logs -f printed %q", follow.String())
		}
		return nil
	})
	s.ok(t, "bai run --name tick --exec 'touch go; echo touched >&2' python")
	if c := runWait(); c != 0 || runOut.String() != "before\nafter\n" {
		t.Fatalf("the run: exit %d %q %q", c, runOut.String(), runErr.String())
	}
	natstest.CheckFor(t, 20*time.Second, 20*time.Millisecond, func() error {
		if follow.String() != "before\nafter\n" {
			return fmt.Errorf("logs -f printed %q", follow.String())
		}
		return nil
	})
	s.ok(t, "bai rm tick")
	if c := followWait(); c != 0 || follow.String() != "before\nafter\n" || followErr.String() != "touched\n" {
		t.Fatalf("logs -f: exit %d %q %q", c, follow.String(), followErr.String())
	}
	// On an ended session it prints everything and exits at once.
	if out := s.ok(t, "bai logs -f tick"); out != "before\nafter\n" {
		t.Fatalf("logs -f of an ended session: %q", out)
	}
	if code, _, errOut := s.sh(t, "bai logs -f nope"); code != 1 || !strings.Contains(errOut, "session nope not found") {
		t.Fatalf("logs -f of no session: %d %q", code, errOut)
	}
}

// TestShellCompletion: the bash script, loaded in a real bash, completes
// a live session's name and id for rm, an ended one's too for logs, and
// the image aliases (an admin's new one among them) for run.
func TestShellCompletion(t *testing.T) {
	r := startServerWith(t, Config{AgentCapacity: map[string]string{"cpu": "4", "mem": "4g"}, IdleTimeout: -1})
	s := newShell(t, r)
	live := strings.TrimSpace(s.ok(t, "bai start --name comp-live python"))
	s.ok(t, "bai run --rm --name comp-done -c 'print(1)' python")
	done := r.waitStatus(t, "comp-done", events.StatusTerminated).ID
	s.ok(t, "bai admin image alias py:edge python:3.11-debian12")
	if _, err := exec.LookPath("bash"); err != nil {
		t.Skip("no bash")
	}
	for name, body := range map[string]string{
		"bai.bash": s.ok(t, "bai completion bash"),
		// What bash does on TAB after the words given.
		"tab.bash": "source ./bai.bash\nCOMP_WORDS=(bai \"$@\")\nCOMP_CWORD=$#\n_bai\nprintf '%s\\n' \"${COMPREPLY[@]}\"\n",
	} {
		if err := os.WriteFile(filepath.Join(s.dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// complete WORDS... prints what bash offers for the last word.
	complete := func(words ...string) []string {
		t.Helper()
		quoted := make([]string, len(words))
		for i, w := range words {
			quoted[i] = "'" + w + "'"
		}
		return strings.Fields(s.ok(t, "bash ./tab.bash "+strings.Join(quoted, " ")))
	}
	has := func(got []string, want ...string) bool {
		set := map[string]bool{}
		for _, g := range got {
			set[g] = true
		}
		for _, w := range want {
			if !set[w] {
				return false
			}
		}
		return true
	}
	if got := complete("rm", ""); !has(got, "comp-live", live) || has(got, done) {
		t.Fatalf("rm <TAB>: %q (live %s, ended %s)", got, live, done)
	}
	if got := complete("rm", "comp-"); strings.Join(got, " ") != "comp-live" {
		t.Fatalf("rm comp-<TAB>: %q", got)
	}
	if got := complete("logs", "-f", "comp-"); strings.Join(got, " ") != "comp-done comp-live" && strings.Join(got, " ") != "comp-live comp-done" {
		t.Fatalf("logs -f comp-<TAB>: %q", got)
	}
	if got := complete("run", "-r", "cpu=1", "py"); !has(got, "python", "python:3.11-debian12", "py:edge") {
		t.Fatalf("run py<TAB>: %q", got)
	}
	if got := complete("ev"); strings.Join(got, " ") != "events" {
		t.Fatalf("ev<TAB>: %q", got)
	}
	if got := complete("ps", "--na"); strings.Join(got, " ") != "--name-only --nats" {
		t.Fatalf("ps --na<TAB>: %q", got)
	}
	// fish, where installed: its own completion engine on the script.
	if _, err := exec.LookPath("fish"); err == nil {
		rm := s.ok(t, `fish -c "bai completion fish | source; complete -C 'bai rm comp-'"`)
		run := s.ok(t, `fish -c "bai completion fish | source; complete -C 'bai run py:'"`)
		if rm != "comp-live\n" || !has(strings.Fields(run), "py:edge") {
			t.Fatalf("fish: rm comp-<TAB> %q, run py:<TAB> %q", rm, run)
		}
	}
	// zsh, where installed: the script's function, with compadd and
	// _files standing in for the completion system's (they need a
	// terminal).
	if _, err := exec.LookPath("zsh"); err == nil {
		if err := os.WriteFile(filepath.Join(s.dir, "bai.zsh"), []byte(s.ok(t, "bai completion zsh")), 0o644); err != nil {
			t.Fatal(err)
		}
		out := s.ok(t, `zsh -c 'compdef() { : }; compadd() { [[ $1 == -- ]] && shift; print -l -- "$@" }; _files() { print FILES }
source ./bai.zsh
words=(bai rm comp-); CURRENT=3; _bai
words=(bai run -r cpu=1 py:); CURRENT=5; _bai
words=(bai run python ""); CURRENT=4; _bai'`)
		if out != "comp-live\npy:edge\nFILES\n" {
			t.Fatalf("zsh: %q", out)
		}
	}
	// A server that does not answer completes nothing, silently.
	code, out, errOut := s.sh(t, `BAI_CONFIG=/nonexistent bai __complete rm ''`)
	if code != 0 || out != "" || errOut != "" {
		t.Fatalf("completion without a server: %d %q %q", code, out, errOut)
	}
}

// TestREADMECredentialsExample: the README's example of the credentials
// file is the file bai-server writes, but for the path, the port and the
// keys; and bai reads it through BAI_CONFIG and --credentials.
func TestREADMECredentialsExample(t *testing.T) {
	readme, err := os.ReadFile(filepath.Join("..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile("(?s)```\n(# bai credentials.*?)```").FindSubmatch(readme)
	if m == nil {
		t.Fatal("no credentials example in README.md")
	}
	// The example, its placeholders made patterns.
	pat := regexp.QuoteMeta(string(m[1]))
	for _, r := range []struct{ from, to string }{
		{regexp.QuoteMeta("/home/you/.local/share/bai/credentials.env"), `\S+/credentials\.env`},
		{regexp.QuoteMeta("127.0.0.1:4222"), `127\.0\.0\.1:\d+`},
		{regexp.QuoteMeta("'AKIA...'"), `'AKIA[0-9A-Z]{16}'`},
		{regexp.QuoteMeta("BAI_SECRET_KEY='...'"), `BAI_SECRET_KEY='[^']{40}'`},
	} {
		if !strings.Contains(pat, r.from) {
			t.Fatalf("the README's example has no %s", r.from)
		}
		pat = strings.Replace(pat, r.from, r.to, 1)
	}
	r := startServerWith(t, Config{AgentCapacity: map[string]string{"cpu": "1", "mem": "1g"}, IdleTimeout: -1})
	file, err := os.ReadFile(r.srv.CredentialsPath())
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`\A` + pat + `\z`).Match(file) {
		t.Fatalf("the credentials file\n%s\ndoes not match the README's example\n%s", file, m[1])
	}
	// Read through BAI_CONFIG (newShell); keys in the environment beat
	// it, and --credentials beats them.
	s := newShell(t, r)
	s.ok(t, "bai ps")
	s.env = append(s.env, "BAI_ACCESS_KEY=AKIAWRONG00000000000", "BAI_SECRET_KEY=wrong")
	if code, _, errOut := s.sh(t, "bai ps"); code != 1 || !strings.Contains(errOut, "refused the credentials") {
		t.Fatalf("ps with wrong keys in the environment: %d %q", code, errOut)
	}
	if out := s.ok(t, "bai --credentials "+r.srv.CredentialsPath()+" ps"); out != "There are no matching sessions.\n" {
		t.Fatalf("ps --credentials: %q", out)
	}
	if code, _, errOut := s.sh(t, "bai --credentials /nonexistent ps"); code != 1 || !strings.Contains(errOut, "read credentials: open /nonexistent") {
		t.Fatalf("ps --credentials of no file: %d %q", code, errOut)
	}
}
