package server

import (
	"bytes"
	"encoding/json"
	"errors"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bai-sh/bai/internal/natstest"
	"github.com/bai-sh/bai/pkg/svcflags"
)

// TestBinariesTakeTheCommonFlags (issue 15): every service binary, built
// and run with --help, names the same common flags (package svcflags)
// with the same environment variables; each refuses a bad --log-format
// with a clear error before it does anything.
func TestBinariesTakeTheCommonFlags(t *testing.T) {
	if testing.Short() {
		t.Skip("SKIP: builds five binaries (not in -short)")
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skipf("SKIP: no go tool: %v", err)
	}
	service := svcflags.Options{NATS: true, Replicas: true}
	withData := svcflags.Options{NATS: true, Replicas: true, DataDir: "x"}
	for _, tc := range []struct {
		bin, pkg string
		opts     svcflags.Options
	}{
		{"bai-server", "./cmd/bai-server", svcflags.Options{DataDir: "x"}},
		{"bai-gateway", "github.com/bai-sh/bai/services/gateway/cmd/bai-gateway", service},
		{"bai-scheduler", "github.com/bai-sh/bai/services/scheduler/cmd/bai-scheduler", service},
		{"bai-registry", "github.com/bai-sh/bai/services/registry/cmd/bai-registry", withData},
		{"bai-agent", "github.com/bai-sh/bai/services/agent/cmd/bai-agent", withData},
	} {
		t.Run(tc.bin, func(t *testing.T) {
			bin := filepath.Join(t.TempDir(), tc.bin)
			if out, err := exec.Command(goBin, "build", "-o", bin, tc.pkg).CombinedOutput(); err != nil {
				t.Fatalf("build: %v\n%s", err, out)
			}
			var out bytes.Buffer
			cmd := exec.Command(bin, "--help")
			cmd.Stdout, cmd.Stderr = &out, &out
			if err := cmd.Run(); err != nil {
				t.Fatalf("--help: %v\n%s", err, out.String())
			}
			help := out.String()
			for _, name := range svcflags.FlagNames(tc.opts) {
				if !strings.Contains(help, "  -"+name+" ") && !strings.Contains(help, "  -"+name+"\n") {
					t.Errorf("--help lacks -%s:\n%s", name, help)
				}
			}
			for _, env := range []string{svcflags.EnvLogLevel, svcflags.EnvLogFormat, svcflags.EnvMetricsAddr} {
				if !strings.Contains(help, env) {
					t.Errorf("--help does not name %s", env)
				}
			}
			if tc.opts.NATS && (!strings.Contains(help, svcflags.EnvNATSURL) || !strings.Contains(help, svcflags.EnvNATSCreds)) {
				t.Errorf("--help does not name the NATS variables")
			}
			out.Reset()
			args := []string{"--log-format", "xml"}
			if tc.opts.DataDir != "" {
				args = append(args, "--data-dir", t.TempDir())
			}
			cmd = exec.Command(bin, args...)
			cmd.Stdout, cmd.Stderr = &out, &out
			var ee *exec.ExitError
			if err := cmd.Run(); !errors.As(err, &ee) || ee.ExitCode() != 1 || !strings.Contains(out.String(), "--log-format") {
				t.Fatalf("bad --log-format: %v %q", err, out.String())
			}
		})
	}
}

// TestServerLogsJSONStartAndStop: bai-server with its stderr not a
// terminal logs JSON lines naming the service, service_started first
// and service_stopped last at a clean stop (SIGTERM).
func TestServerLogsJSONStartAndStop(t *testing.T) {
	if testing.Short() {
		t.Skip("SKIP: builds and runs bai-server (not in -short)")
	}
	bin := buildServer(t)
	stdout, stderr := &natstest.SyncBuffer{}, &natstest.SyncBuffer{}
	cmd := exec.Command(bin, "--data-dir", t.TempDir(), "--listen", "127.0.0.1:-1", "--log-level", "info")
	cmd.Stdout, cmd.Stderr = stdout, stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	natstest.CheckFor(t, 60*time.Second, 50*time.Millisecond, func() error {
		if !strings.Contains(stdout.String(), "bai server ready") {
			return errors.New("not ready")
		}
		return nil
	})
	_ = cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("bai-server: %v\n%s", err, stderr.String())
	}
	var msgs []string
	for _, l := range strings.Split(strings.TrimSpace(stderr.String()), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("not a JSON line: %q", l)
		}
		if m["service"] != "bai-server" {
			t.Fatalf("line without service: %q", l)
		}
		msg, _ := m["message"].(string)
		msgs = append(msgs, msg)
	}
	if len(msgs) < 3 || msgs[0] != "service_started" || msgs[len(msgs)-1] != "service_stopped" || !slices.Contains(msgs, "server_ready") {
		t.Fatalf("messages %v", msgs)
	}
}
