package cli

import (
	"bytes"
	"context"
	"flag"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bai-sh/bai/pkg/events"
	"github.com/bai-sh/bai/tools/bai/client"
)

var update = flag.Bool("update", false, "rewrite the golden files")

// run runs the CLI in-process and returns its exit code and output.
func run(t *testing.T, env Env, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = Run(context.Background(), append([]string{"bai"}, args...), &out, &errb, env)
	return code, out.String(), errb.String()
}

// noServer has credentials and a URL where nothing listens, so a test
// that reaches the network fails loudly instead of passing by accident.
func noServer(t *testing.T) Env {
	return Env{NATSURL: closedPort(t), AccessKey: "AK", SecretKey: "SK"}
}

func closedPort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	url := "nats://" + l.Addr().String()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	return url
}

func TestArgumentErrors(t *testing.T) {
	long := strings.Repeat("x", 300)
	tests := []struct {
		name string
		args []string
		code int
		msg  string // in the one stderr line
	}{
		{"unknown command", []string{"frobnicate"}, ExitUsage, `unknown command "frobnicate"`},
		{"unknown admin command", []string{"admin", "nope"}, ExitUsage, `unknown command "nope"`},
		{"unknown flag", []string{"run", "-x"}, ExitUsage, "flag provided but not defined: -x"},
		{"unknown global flag", []string{"--nope", "ps"}, ExitUsage, "flag provided but not defined: -nope"},
		{"run without image", []string{"run", "-c", "print(1)"}, ExitUsage, "run takes IMAGE [FILE...]"},
		{"run with a missing file", []string{"run", "-c", "x", "a", "no-such-file"}, ExitInvalid, "file no-such-file:"},
		{"run with an absolute file", []string{"run", "--exec", "x", "a", "/etc/passwd"}, ExitInvalid, "an absolute path"},
		{"run with a file out of the tree", []string{"run", "--exec", "x", "a", "../x.py"}, ExitInvalid, "leaves the current directory"},
		{"run flag after image", []string{"run", "python", "-c", "x"}, ExitUsage, "flag -c must come before the arguments"},
		{"run without code", []string{"run", "python"}, ExitInvalid, "no code to run: give -c CODE"},
		{"run with empty code", []string{"run", "--rm", "-c", "", "python"}, ExitInvalid, "no code to run: give -c CODE"},
		{"run with code and exec", []string{"run", "-c", "x", "--exec", "ls", "python"}, ExitInvalid, "give -c or --exec, not both"},
		{"run with a bad slot", []string{"run", "-r", "cpu=lots", "-c", "x", "python"}, ExitInvalid, "bad resource slot"},
		{"run with a repeated slot", []string{"run", "-r", "cpu=1", "-r", "cpu=2", "-c", "x", "python"}, ExitInvalid, "bad resource slot"},
		{"run with a bad env", []string{"run", "-e", "NOEQUALS", "-c", "x", "python"}, ExitInvalid, `bad environment variable "NOEQUALS"`},
		{"run with an empty env key", []string{"run", "-e", "=v", "-c", "x", "python"}, ExitInvalid, "bad environment variable"},
		{"run with a bad type", []string{"run", "--type", "daemon", "-c", "x", "python"}, ExitInvalid, "--type must be interactive or batch"},
		{"run with a bad priority", []string{"run", "--priority", "101", "-c", "x", "python"}, ExitInvalid, "--priority must be 0 to 100"},
		{"run with a bad starts-at", []string{"run", "--starts-at", "tomorrow", "-c", "x", "python"}, ExitInvalid, "bad --starts-at"},
		{"run with a long name", []string{"run", "-t", long, "-c", "x", "python"}, ExitInvalid, "--name is longer than"},
		{"run with an empty image", []string{"run", "-c", "x", ""}, ExitInvalid, "the image is empty"},
		{"run with a bad output", []string{"run", "--output", "yaml", "-c", "x", "python"}, ExitInvalid, "--output must be text or json"},
		{"start without image", []string{"start"}, ExitUsage, "start takes one argument, IMAGE"},
		{"start with a bad slot", []string{"start", "-r", "mem=-1g", "python"}, ExitInvalid, "bad resource slot"},
		{"start with a negative wait", []string{"start", "--max-wait", "-1s", "python"}, ExitInvalid, "--max-wait must not be negative"},
		{"ps with an argument", []string{"ps", "x"}, ExitUsage, "ps takes no arguments"},
		{"ps with an unknown status", []string{"ps", "-s", "RUNNING,SLEEPING"}, ExitInvalid, `unknown status "SLEEPING"`},
		{"admin session list with an unknown status", []string{"admin", "session", "list", "--status", "nope"}, ExitInvalid, `unknown status "nope"`},
		{"ps with two filters", []string{"ps", "--running", "--dead"}, ExitUsage, "give at most one of --running, --dead and --status"},
		{"ps with a zero limit", []string{"ps", "--limit", "0"}, ExitInvalid, "--limit must be at least 1"},
		{"ps with a negative offset", []string{"ps", "--offset", "-1"}, ExitInvalid, "--offset must not be negative"},
		{"ps with a bad limit", []string{"ps", "--limit", "ten"}, ExitUsage, `invalid value "ten"`},
		{"ps with a bad global output", []string{"--output", "xml", "ps"}, ExitInvalid, "--output must be text or json"},
		{"events without id", []string{"events"}, ExitUsage, "events takes one argument, ID|NAME"},
		{"events with an invalid id", []string{"events", "a b"}, ExitInvalid, `invalid session id or name "a b"`},
		{"events with a long id", []string{"events", long}, ExitInvalid, "invalid session id or name"},
		{"events waiting for nothing", []string{"events", "--wait", "session_napping", "x"}, ExitInvalid, `unknown event "session_napping"`},
		{"rm without ids", []string{"rm"}, ExitUsage, "rm takes ID|NAME [ID|NAME...]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, stdout, stderr := run(t, noServer(t), tt.args...)
			if code != tt.code {
				t.Errorf("exit code %d, want %d (stderr %q)", code, tt.code, stderr)
			}
			if stdout != "" {
				t.Errorf("stdout %q, want nothing", stdout)
			}
			if !strings.HasPrefix(stderr, "bai: ") || strings.Count(stderr, "\n") != 1 || !strings.Contains(stderr, tt.msg) {
				t.Errorf("stderr %q, want one line \"bai: ...%s...\"", stderr, tt.msg)
			}
			if strings.Contains(stderr, "cannot reach") {
				t.Errorf("the command tried to connect: %q", stderr)
			}
		})
	}
}

func TestHelp(t *testing.T) {
	for _, args := range [][]string{{}, {"--help"}, {"run", "--help"}, {"admin"}, {"admin", "session", "list", "--help"}, {"--version"}} {
		code, stdout, stderr := run(t, Env{}, args...)
		if code != ExitOK || stdout == "" || stderr != "" {
			t.Errorf("bai %v: code %d, stdout %q, stderr %q", args, code, stdout, stderr)
		}
	}
}

func TestUnreachable(t *testing.T) {
	env := noServer(t)
	for _, args := range [][]string{
		{"ps"},
		{"run", "--rm", "-c", "print(1)", "python"},
		{"start", "python"},
		{"events", "s1"},
		{"rm", "s1", "s2"},
		{"--nats", env.NATSURL, "ps"},
	} {
		code, stdout, stderr := run(t, env, args...)
		want := "bai: cannot reach the bai server at " + env.NATSURL + ": "
		if code != ExitFailure || stdout != "" || !strings.HasPrefix(stderr, want) || strings.Count(stderr, "\n") != 1 {
			t.Errorf("bai %v: code %d, stdout %q, stderr %q; want 1 and %q...", args, code, stdout, stderr, want)
		}
	}
}

func TestInterruptedBeforeStart(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	var out, errb bytes.Buffer
	code := Run(ctx, []string{"bai", "ps"}, &out, &errb, noServer(t))
	if code != ExitInterrupted || out.Len() != 0 || errb.Len() != 0 {
		t.Fatalf("code %d, stdout %q, stderr %q; want %d and no output", code, out.String(), errb.String(), ExitInterrupted)
	}
}

func writeFile(t *testing.T, dir, content string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, client.CredentialsFileName), []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestResolveOptions(t *testing.T) {
	fileDir := t.TempDir()
	writeFile(t, fileDir, "export BAI_NATS_URL=nats://file:4222\nexport BAI_ACCESS_KEY=FILEAK BAI_SECRET_KEY='file sk'\n")
	noURLDir := t.TempDir()
	writeFile(t, noURLDir, "export BAI_ACCESS_KEY=FILEAK BAI_SECRET_KEY=FILESK\n")
	badDir := t.TempDir()
	writeFile(t, badDir, "export BAI_ACCESS_KEY='unterminated\n")
	emptyDir := t.TempDir()
	urlOnlyDir := t.TempDir()
	writeFile(t, urlOnlyDir, "export BAI_NATS_URL=nats://u:1\n")
	urlOnly := client.CredentialsPath(urlOnlyDir)

	tests := []struct {
		name          string
		flag, file    string
		env           Env
		url, ak, sk   string
		errorContains string
	}{
		{name: "flag beats env and file", flag: "nats://flag:1", env: Env{NATSURL: "nats://env:1", DataDir: fileDir},
			url: "nats://flag:1", ak: "FILEAK", sk: "file sk"},
		{name: "env beats file", env: Env{NATSURL: "nats://env:1", AccessKey: "ENVAK", SecretKey: "ENVSK", DataDir: fileDir},
			url: "nats://env:1", ak: "ENVAK", sk: "ENVSK"},
		{name: "env keys, file url", env: Env{AccessKey: "ENVAK", SecretKey: "ENVSK", DataDir: fileDir},
			url: "nats://file:4222", ak: "ENVAK", sk: "ENVSK"},
		{name: "file only", env: Env{DataDir: fileDir}, url: "nats://file:4222", ak: "FILEAK", sk: "file sk"},
		{name: "default url", env: Env{DataDir: noURLDir}, url: client.DefaultURL, ak: "FILEAK", sk: "FILESK"},
		{name: "env only, no data dir", env: Env{AccessKey: "A", SecretKey: "S"}, url: client.DefaultURL, ak: "A", sk: "S"},
		{name: "env keys skip a bad file", env: Env{NATSURL: "nats://env:1", AccessKey: "A", SecretKey: "S", DataDir: badDir},
			url: "nats://env:1", ak: "A", sk: "S"},
		{name: "no credentials names the file", env: Env{DataDir: emptyDir},
			errorContains: "no credentials: set BAI_ACCESS_KEY and BAI_SECRET_KEY, or start bai-server, which writes them to " + client.CredentialsPath(emptyDir)},
		{name: "no credentials, no data dir", env: Env{}, errorContains: "no credentials"},
		{name: "access key without secret", env: Env{AccessKey: "A", DataDir: fileDir}, errorContains: "BAI_ACCESS_KEY is set but BAI_SECRET_KEY is not"},
		{name: "secret without access key", env: Env{SecretKey: "S"}, errorContains: "BAI_SECRET_KEY is set but BAI_ACCESS_KEY is not"},
		{name: "bad file", env: Env{DataDir: badDir}, errorContains: client.CredentialsPath(badDir)},
		// --credentials FILE beats the environment; --nats beats it.
		{name: "--credentials beats env", file: client.CredentialsPath(fileDir), env: Env{NATSURL: "nats://env:1", AccessKey: "ENVAK", SecretKey: "ENVSK", DataDir: noURLDir},
			url: "nats://file:4222", ak: "FILEAK", sk: "file sk"},
		{name: "--nats beats --credentials", flag: "nats://flag:1", file: client.CredentialsPath(fileDir), url: "nats://flag:1", ak: "FILEAK", sk: "file sk"},
		{name: "--credentials without url, env url", file: client.CredentialsPath(noURLDir), env: Env{NATSURL: "nats://env:1"},
			url: "nats://env:1", ak: "FILEAK", sk: "FILESK"},
		{name: "--credentials missing", file: client.CredentialsPath(emptyDir), env: Env{AccessKey: "A", SecretKey: "S"},
			errorContains: "read credentials: open " + client.CredentialsPath(emptyDir) + ": no such file"},
		{name: "--credentials bad", file: client.CredentialsPath(badDir), errorContains: "unterminated"},
		{name: "--credentials without keys", file: urlOnly, errorContains: "credentials file " + urlOnly + " sets no BAI_ACCESS_KEY and BAI_SECRET_KEY"},
		// $BAI_CONFIG moves the file; the environment's variables beat it.
		{name: "BAI_CONFIG instead of the data dir's", env: Env{Config: client.CredentialsPath(fileDir), DataDir: noURLDir},
			url: "nats://file:4222", ak: "FILEAK", sk: "file sk"},
		{name: "env beats BAI_CONFIG", env: Env{Config: client.CredentialsPath(fileDir), AccessKey: "A", SecretKey: "S"},
			url: "nats://file:4222", ak: "A", sk: "S"},
		{name: "BAI_CONFIG missing", env: Env{Config: client.CredentialsPath(emptyDir), DataDir: fileDir},
			errorContains: "read credentials ($BAI_CONFIG): open " + client.CredentialsPath(emptyDir)},
		{name: "BAI_CONFIG without keys", env: Env{Config: urlOnly}, errorContains: "fix $BAI_CONFIG (" + urlOnly + "), which sets none"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := resolveOptions(tt.flag, tt.file, tt.env)
			if tt.errorContains != "" {
				if err == nil || !strings.Contains(err.Error(), tt.errorContains) {
					t.Fatalf("err = %v, want one containing %q", err, tt.errorContains)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.URL != tt.url || got.AccessKey != tt.ak || got.SecretKey != tt.sk {
				t.Fatalf("got %s %s %s, want %s %s %s", got.URL, got.AccessKey, got.SecretKey, tt.url, tt.ak, tt.sk)
			}
		})
	}
}

func TestNoCredentials(t *testing.T) {
	dir := t.TempDir()
	code, stdout, stderr := run(t, Env{DataDir: dir}, "ps")
	want := "bai: no credentials: set BAI_ACCESS_KEY and BAI_SECRET_KEY, or start bai-server, which writes them to " +
		client.CredentialsPath(dir) + "\n"
	if code != ExitFailure || stdout != "" || stderr != want {
		t.Fatalf("code %d, stdout %q, stderr %q; want 1 and %q", code, stdout, stderr, want)
	}
}

func TestParseStatuses(t *testing.T) {
	got, err := parseStatuses("running, Pending,ERROR")
	if err != nil {
		t.Fatal(err)
	}
	want := []events.Status{events.StatusRunning, events.StatusPending, events.StatusError}
	if len(got) != len(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("got %v, want %v", got, want)
		}
	}
	for _, bad := range []string{"", "RUNNING,", "NONE", "running;dead"} {
		if _, err := parseStatuses(bad); exitCode(context.Background(), err) != ExitInvalid {
			t.Errorf("parseStatuses(%q): err = %v, want an invalid argument", bad, err)
		}
	}
}

func TestSessionTable(t *testing.T) {
	var buf bytes.Buffer
	if err := writeSessionTable(&buf, sampleSessions()); err != nil {
		t.Fatal(err)
	}
	golden(t, "ps_table.golden", buf.Bytes())
}

func sampleSessions() []events.SessionInfo {
	t0 := time.Date(2025, 3, 1, 12, 30, 0, 0, time.UTC)
	code := 0
	return []events.SessionInfo{
		{
			ID: "5f0c7f3e-8d1a-4b2c-9e4f-0a1b2c3d4e5f", Name: "train-1", AccessKey: "AKIA0123456789ABCDEF",
			Image: "python:3.11", Type: events.TypeBatch, Status: events.StatusRunning,
			StatusChanged: t0, Result: events.ResultUndefined, Group: "default",
			MainKernelID: "k-5f0c7f3e",
		},
		{
			ID: "0a1b2c3d-0000-4000-8000-000000000001", Name: "notebook", Image: "python-tensorflow:2.15",
			Type: events.TypeInteractive, Status: events.StatusTerminated, StatusInfo: "user-requested",
			StatusChanged: t0.Add(-time.Hour).In(time.FixedZone("KST", 9*3600)), Result: events.ResultSuccess,
			Group: "research team", MainKernelID: "k-0a1b2c3d", ExitCode: &code,
		},
		{ID: "s3", Status: events.StatusPending, Result: events.ResultUndefined},
	}
}

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to write it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("output differs from %s:\ngot:\n%s\nwant:\n%s", path, got, want)
	}
}

func TestDescribe(t *testing.T) {
	tests := []struct {
		ev   events.Event
		want string
	}{
		{events.Event{Name: events.EventCancelled, Reason: events.ReasonPendingTimeout, Message: "no agent fits cpu=64"},
			"session S was cancelled (pending-timeout): no agent fits cpu=64"},
		{events.Event{Name: events.EventError, Message: "image not found"}, "session S failed: image not found"},
		{events.Event{Name: events.EventFailure, Reason: events.ReasonFailedToStart}, "session S failed (failed-to-start)"},
		{events.Event{Name: events.EventTerminated, Reason: events.ReasonUserRequested}, "session S was terminated (user-requested)"},
	}
	for _, tt := range tests {
		if got := describe("S", &tt.ev); got != tt.want {
			t.Errorf("describe(%s) = %q, want %q", tt.ev.Name, got, tt.want)
		}
		if !endsRun(&tt.ev) {
			t.Errorf("endsRun(%s) = false", tt.ev.Name)
		}
	}
	for _, n := range []events.Name{events.EventEnqueued, events.EventScheduled, events.EventStarted, events.EventTerminating, events.EventSuccess} {
		if endsRun(&events.Event{Name: n}) {
			t.Errorf("endsRun(%s) = true", n)
		}
	}
}
