package svcflags

import (
	"bytes"
	"encoding/json"
	"flag"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
)

func TestRegisterNamesAndEnv(t *testing.T) {
	if got, want := FlagNames(Options{}), []string{"log-format", "log-level", "metrics-addr"}; !slices.Equal(got, want) {
		t.Fatalf("flags %v, want %v", got, want)
	}
	if got, want := FlagNames(Options{NATS: true, Replicas: true, DataDir: "/d"}),
		[]string{"data-dir", "log-format", "log-level", "metrics-addr", "nats", "nats-creds", "replicas"}; !slices.Equal(got, want) {
		t.Fatalf("flags %v, want %v", got, want)
	}
	t.Setenv(EnvNATSURL, "nats://a:4222")
	t.Setenv(EnvDataDir, "/var/lib/bai")
	t.Setenv(EnvLogLevel, "debug")
	t.Setenv(EnvLogFormat, "json")
	t.Setenv(EnvMetricsAddr, "127.0.0.1:9")
	t.Setenv(EnvNATSCreds, "/c")
	t.Setenv(EnvReplicas, "3")
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	c := Register(fs, Options{NATS: true, Replicas: true, DataDir: "/d"})
	if err := fs.Parse([]string{"--log-level", "warn"}); err != nil {
		t.Fatal(err)
	}
	want := Common{NATS: "nats://a:4222", NATSCreds: "/c", DataDir: "/var/lib/bai", LogLevel: "warn", LogFormat: "json", Replicas: "3", MetricsAddr: "127.0.0.1:9"}
	if *c != want {
		t.Fatalf("common %+v, want %+v", *c, want)
	}
}

// TestLogger: JSON lines off a terminal by default, console lines without
// colour codes when asked for off a terminal, the service named on every
// line; a bad level or format is refused.
func TestLogger(t *testing.T) {
	var buf bytes.Buffer
	log, err := (&Common{LogLevel: "info"}).Logger(&buf, "bai-x")
	if err != nil {
		t.Fatal(err)
	}
	log.Debug().Msg("hidden")
	(&Common{LogLevel: "info", NATS: "nats://u:secret@h:4222"}).Started(log, nil)
	var line map[string]any
	if err := json.Unmarshal(buf.Bytes(), &line); err != nil {
		t.Fatalf("not one JSON line: %q", buf.String())
	}
	if line["message"] != "service_started" || line["service"] != "bai-x" || line["version"] != Version || line["nats"] != "nats://u:xxx@h:4222" {
		t.Fatalf("line %v", line)
	}
	buf.Reset()
	log, err = (&Common{LogLevel: "debug", LogFormat: "console"}).Logger(&buf, "bai-x")
	if err != nil {
		t.Fatal(err)
	}
	Stopped(log)
	if s := buf.String(); !strings.Contains(s, "service_stopped") || strings.Contains(s, "\x1b[") || strings.HasPrefix(s, "{") {
		t.Fatalf("console line %q", s)
	}
	for _, c := range []Common{{LogLevel: "loud"}, {LogLevel: ""}, {LogLevel: "info", LogFormat: "xml"}} {
		if _, err := c.Logger(io.Discard, "x"); err == nil {
			t.Errorf("%+v accepted", c)
		}
	}
}

func TestCredsOption(t *testing.T) {
	dir := t.TempDir()
	write := func(name, s string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	for name, content := range map[string]string{
		"userpass": "# bai-gateway\nbai-gateway:s3cret\n",
		"creds":    "-----BEGIN NATS USER JWT-----\neyJ0\n------END NATS USER JWT------\n",
	} {
		if _, err := CredsOption(write(name, content)); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	for name, content := range map[string]string{"empty": "", "nocolon": "justauser\n", "nopass": "user:\n"} {
		if _, err := CredsOption(write(name, content)); err == nil || !strings.Contains(err.Error(), "--nats-creds") {
			t.Errorf("%s accepted: %v", name, err)
		}
	}
	if _, err := CredsOption(filepath.Join(dir, "missing")); err == nil {
		t.Error("a missing file accepted")
	}
}

func TestParseReplicas(t *testing.T) {
	for in, want := range map[string]int{"": 0, "0": 0, "3": 3, "5": 5} {
		if n, err := ParseReplicas(in); err != nil || n != want {
			t.Errorf("%q: %d %v", in, n, err)
		}
	}
	for _, in := range []string{"-1", "6", "x"} {
		if _, err := ParseReplicas(in); err == nil {
			t.Errorf("%q accepted", in)
		}
	}
}

// TestServeMetrics: the endpoint serves what is registered; a taken or
// bad address is refused; without --metrics-addr nothing is served.
func TestServeMetrics(t *testing.T) {
	reg := NewRegistry()
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "bai_test_total", Help: "test"})
	reg.MustRegister(c)
	c.Add(3)
	m, err := ServeMetrics("127.0.0.1:0", reg, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get("http://" + m.Addr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), "\nbai_test_total 3\n") || !strings.Contains(string(body), "go_goroutines") {
		t.Fatalf("metrics:\n%s", body)
	}
	if _, err := ServeMetrics(m.Addr(), reg, zerolog.Nop()); err == nil {
		t.Fatal("a taken address accepted")
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	r, stop, err := (&Common{}).StartMetrics(zerolog.Nop())
	if err != nil || r != nil {
		t.Fatalf("no --metrics-addr: %v %v", r, err)
	}
	stop()
	if _, _, err := (&Common{MetricsAddr: "nope"}).StartMetrics(zerolog.Nop()); err == nil || !strings.Contains(err.Error(), "--metrics-addr") {
		t.Fatalf("bad address: %v", err)
	}
}
