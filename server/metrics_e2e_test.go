package server

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/bai-sh/bai/internal/natstest"
	"github.com/bai-sh/bai/pkg/events"
	"github.com/bai-sh/bai/pkg/svcflags"
)

// scrape reads url (a /metrics endpoint) into series → value: each line
// `name{labels} value`, the labels as written.
func scrape(t *testing.T, url string) map[string]float64 {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %v", url, resp.StatusCode, err)
	}
	out := map[string]float64{}
	for _, line := range strings.Split(string(body), "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("metrics line %q: %v", line, err)
		}
		out[line[:i]] = v
	}
	return out
}

// TestMetricsEndpointCountsWhatHappened (issue 15): the all-in-one
// server's metrics, served as bai-server --metrics-addr does and scraped
// over HTTP after three sessions ran and three creates were refused,
// show those numbers: sessions by status, admissions and refusals by
// reason, placements and their latency, output bytes, the agent's
// capacity and a registry caught up with the log.
func TestMetricsEndpointCountsWhatHappened(t *testing.T) {
	reg := prometheus.NewRegistry()
	r := startServerWith(t, Config{AgentCapacity: map[string]string{"cpu": "2", "mem": "4g"}, IdleTimeout: -1, Metrics: reg})
	m, err := svcflags.ServeMetrics("127.0.0.1:0", reg, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Close() })
	url := "http://" + m.Addr() + "/metrics"

	const runs = 3
	for i := range runs {
		if out := r.ok(t, "run", "--rm", "--name", fmt.Sprintf("m%d", i), "-c", "print('hello')", "python"); out != "hello\n" {
			t.Fatalf("run %d: %q", i, out)
		}
	}
	// Refused: two malformed slot values and one unknown image.
	cl := r.client(t)
	refused := map[string]int{}
	for _, req := range []events.CreateRequest{
		{Image: "python", Slots: []string{"cpu=lots"}},
		{Image: "python", Slots: []string{"mem=-1"}},
		{Image: "no-such-image:0"},
	} {
		_, err := cl.Create(context.Background(), req)
		if err == nil {
			t.Fatalf("create %+v admitted", req)
		}
		refused[events.CodeOf(err)]++
	}

	var got map[string]float64
	natstest.CheckFor(t, 20*time.Second, 50*time.Millisecond, func() error {
		got = scrape(t, url)
		if v := got[`bai_sessions{status="TERMINATED"}`]; v != runs {
			return fmt.Errorf("bai_sessions TERMINATED = %v, want %d", v, runs)
		}
		if v, ok := got[`bai_registry_lag_events`]; !ok || v != 0 {
			return fmt.Errorf("registry lag %v (present %v)", v, ok)
		}
		return nil
	})
	agentID := r.list(t)[0].AgentID
	want := map[string]float64{
		`bai_sessions{status="RUNNING"}`:                                        0,
		`bai_sessions{status="PENDING"}`:                                        0,
		`bai_admissions_total`:                                                  runs,
		`bai_placements_total{scaling_group="default"}`:                         runs,
		`bai_placement_latency_seconds_count{scaling_group="default"}`:          runs,
		`bai_scheduler_leader`:                                                  1,
		`bai_agent_capacity{agent="` + agentID + `",slot="cpu"}`:                2,
		`bai_agent_capacity{agent="` + agentID + `",slot="mem"}`:                4 << 30,
		`bai_agent_used{agent="` + agentID + `",slot="cpu"}`:                    0,
		`bai_agent_output_bytes_total{agent="` + agentID + `",stream="stdout"}`: runs * float64(len("hello\n")),
		`bai_agent_kernels{agent="` + agentID + `"}`:                            0,
	}
	for code, n := range refused {
		want[`bai_admissions_refused_total{reason="`+code+`"}`] = float64(n)
	}
	for k, v := range want {
		if g, ok := got[k]; !ok || g != v {
			t.Errorf("%s = %v (present %v), want %v", k, g, ok, v)
		}
	}
	if age, ok := got[`bai_agent_heartbeat_age_seconds{agent="`+agentID+`"}`]; !ok || age < 0 || age > 30 {
		t.Errorf("heartbeat age %v (present %v)", age, ok)
	}
	if got[`bai_registry_log_last_seq`] == 0 || got[`bai_registry_applied_seq`] != got[`bai_registry_log_last_seq`] {
		t.Errorf("registry applied %v of %v", got[`bai_registry_applied_seq`], got[`bai_registry_log_last_seq`])
	}
	if t.Failed() {
		t.Logf("scraped: %v", got)
	}
}

// TestNATSMonitorFlag: with NATSMonitor (bai-server --nats-monitor) the
// embedded NATS server answers its monitoring endpoints; without it no
// port is open. A bad address is refused before anything starts.
func TestNATSMonitorFlag(t *testing.T) {
	if _, err := New(Config{NATSMonitor: "nope"}); err == nil {
		t.Fatal("a monitor address without a port was accepted")
	}
	r := startServerWith(t, Config{AgentCapacity: map[string]string{"cpu": "1", "mem": "1g"}, NATSMonitor: "127.0.0.1:0"})
	mon := r.srv.NATSMonitorURL()
	if mon == "" {
		t.Fatal("no monitor URL")
	}
	resp, err := http.Get(mon + "/jsz")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var jsz struct {
		Streams int `json:"streams"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&jsz); err != nil || resp.StatusCode != 200 || jsz.Streams == 0 {
		t.Fatalf("/jsz: %d %+v %v", resp.StatusCode, jsz, err)
	}
	off := startServerWith(t, Config{AgentCapacity: map[string]string{"cpu": "1", "mem": "1g"}})
	if u := off.srv.NATSMonitorURL(); u != "" {
		t.Fatalf("monitor open without the flag: %s", u)
	}
}
