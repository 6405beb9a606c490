// Package svcflags is what every bai binary (bai-server, bai-gateway,
// bai-scheduler, bai-registry, bai-agent) shares on its command line: the
// same flag names and environment variables for the same things (NATS
// URL and credentials, data directory, log level and format, metrics
// address), the logger they make, the NATS connection options, and the
// Prometheus endpoint. Services never import it: only the commands do.
package svcflags

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/mattn/go-isatty"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rs/zerolog"
)

// Version is the binaries' version, shown in service_started and in the
// services' micro info. Set at link time with
// -ldflags '-X github.com/bai-sh/bai/pkg/svcflags.Version=...'.
var Version = "0.1.0"

// The environment variables of the common flags.
const (
	EnvNATSURL     = "BAI_NATS_URL"
	EnvNATSCreds   = "BAI_NATS_CREDS"
	EnvDataDir     = "BAI_DATA_DIR"
	EnvLogLevel    = "BAI_LOG_LEVEL"
	EnvLogFormat   = "BAI_LOG_FORMAT"
	EnvMetricsAddr = "BAI_METRICS_ADDR"
)

// Log formats of --log-format.
const (
	FormatJSON    = "json"
	FormatConsole = "console"
)

// Common are the flags every binary takes.
type Common struct {
	// NATS is the NATS URL, or comma-separated URLs of a cluster
	// (--nats, BAI_NATS_URL). Default nats.DefaultURL. Empty where the
	// binary has no such flag (bai-server embeds its NATS).
	NATS string
	// NATSCreds is a file with the connection's credentials
	// (--nats-creds, BAI_NATS_CREDS): a NATS .creds file (user JWT and
	// nkey seed), or one line user:password. Default: none (user and
	// password may be in the URL).
	NATSCreds string
	// DataDir is where the binary keeps its files (--data-dir,
	// BAI_DATA_DIR). Default: the binary's own; empty where it keeps none.
	DataDir string
	// LogLevel is debug, info, warn or error (--log-level, BAI_LOG_LEVEL).
	// Default info.
	LogLevel string
	// LogFormat is json or console (--log-format, BAI_LOG_FORMAT).
	// Default: console on a terminal, json otherwise.
	LogFormat string
	// Replicas is --replicas as given (ParseReplicas reads it).
	Replicas string
	// MetricsAddr is the address of the Prometheus endpoint, /metrics
	// (--metrics-addr, BAI_METRICS_ADDR). Default: none, no endpoint.
	MetricsAddr string
}

// Options say which of the common flags a binary has.
type Options struct {
	// NATS adds --nats and --nats-creds (every binary that connects to
	// a NATS server it does not embed).
	NATS bool
	// DataDir, when set, adds --data-dir with this default.
	DataDir string
	// Replicas adds --replicas (BAI_REPLICAS), read by ParseReplicas.
	Replicas bool
}

// Register adds the common flags to fs; their defaults come from the
// environment, then from o.
func Register(fs *flag.FlagSet, o Options) *Common {
	c := &Common{}
	if o.NATS {
		fs.StringVar(&c.NATS, "nats", envOr(EnvNATSURL, nats.DefaultURL),
			"NATS `URL`, or comma-separated URLs of a cluster; user:password may be in it (env "+EnvNATSURL+")")
		fs.StringVar(&c.NATSCreds, "nats-creds", os.Getenv(EnvNATSCreds),
			"`file` of NATS credentials: a .creds file (user JWT and nkey seed), or one line user:password (env "+EnvNATSCreds+")")
	}
	if o.DataDir != "" {
		fs.StringVar(&c.DataDir, "data-dir", envOr(EnvDataDir, o.DataDir), "`directory` of this service's files (env "+EnvDataDir+")")
	}
	if o.Replicas {
		fs.StringVar(&c.Replicas, "replicas", os.Getenv(EnvReplicas), c.replicasUsage())
	}
	fs.StringVar(&c.LogLevel, "log-level", envOr(EnvLogLevel, "info"), "log `level`: debug, info, warn or error (env "+EnvLogLevel+")")
	fs.StringVar(&c.LogFormat, "log-format", os.Getenv(EnvLogFormat),
		"log `format`: json, or console (readable, coloured on a terminal); default: console on a terminal, json otherwise (env "+EnvLogFormat+")")
	fs.StringVar(&c.MetricsAddr, "metrics-addr", os.Getenv(EnvMetricsAddr),
		"serve Prometheus metrics on http://`ADDR`/metrics (e.g. 127.0.0.1:9090); default: none (env "+EnvMetricsAddr+")")
	return c
}

// Logger makes the binary's logger writing to w, named by service: JSON
// lines, or console lines (colours only when w is a terminal).
func (c *Common) Logger(w io.Writer, service string) (zerolog.Logger, error) {
	lvl, err := zerolog.ParseLevel(strings.ToLower(strings.TrimSpace(c.LogLevel)))
	if err != nil || c.LogLevel == "" {
		return zerolog.Nop(), fmt.Errorf("--log-level (%s) %q: want debug, info, warn or error", EnvLogLevel, c.LogLevel)
	}
	tty := isTerminal(w)
	format := c.LogFormat
	if format == "" {
		format = FormatJSON
		if tty {
			format = FormatConsole
		}
	}
	var out io.Writer
	switch format {
	case FormatJSON:
		out = w
	case FormatConsole:
		out = zerolog.ConsoleWriter{Out: w, NoColor: !tty, TimeFormat: time.RFC3339}
	default:
		return zerolog.Nop(), fmt.Errorf("--log-format (%s) %q: want json or console", EnvLogFormat, c.LogFormat)
	}
	return zerolog.New(out).Level(lvl).With().Timestamp().Str("service", service).Logger(), nil
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && (isatty.IsTerminal(f.Fd()) || isatty.IsCygwinTerminal(f.Fd()))
}

// PingInterval is how often a service's connection pings its NATS
// server; two pings without an answer make the connection stale, and it
// moves to another server of its list. So a node that stops answering
// (stopped, or cut off behind a partition, its TCP connections still
// open) costs its clients 2–3 s, within an agent's timeout (10 s), rather
// than nats.go's default of minutes: an agent on it would otherwise be
// declared lost while the rest of the cluster serves.
const PingInterval = time.Second

// NATSOptions connect for good, named name: the first connection is
// retried while the server is unreachable, and a lost one reconnects
// without end, each with a log line; a server that stops answering is
// left after two unanswered pings (PingInterval); with --nats-creds, its
// credentials.
func (c *Common) NATSOptions(name string, log zerolog.Logger) ([]nats.Option, error) {
	opts := []nats.Option{
		nats.Name(name), nats.MaxReconnects(-1), nats.RetryOnFailedConnect(true), nats.ReconnectWait(time.Second),
		nats.PingInterval(PingInterval), nats.MaxPingsOutstanding(2),
		nats.ConnectHandler(func(nc *nats.Conn) { log.Info().Str("server", nc.ConnectedUrlRedacted()).Msg("nats_connected") }),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) { log.Warn().Err(err).Msg("nats_disconnected") }),
		nats.ReconnectHandler(func(nc *nats.Conn) { log.Info().Str("server", nc.ConnectedUrlRedacted()).Msg("nats_reconnected") }),
		nats.ReconnectErrHandler(func(_ *nats.Conn, err error) { log.Warn().Err(err).Msg("nats_unreachable_retrying") }),
	}
	if c.NATSCreds == "" {
		return opts, nil
	}
	o, err := CredsOption(c.NATSCreds)
	if err != nil {
		return nil, err
	}
	return append(opts, o), nil
}

// CredsOption reads a credentials file: a NATS .creds file (user JWT and
// nkey seed) or one line user:password.
func CredsOption(path string) (nats.Option, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("--nats-creds (%s): %w", EnvNATSCreds, err)
	}
	if bytes.Contains(data, []byte("BEGIN NATS USER JWT")) {
		return nats.UserCredentials(path), nil
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		user, pass, ok := strings.Cut(line, ":")
		if !ok || user == "" || pass == "" {
			break
		}
		return nats.UserInfo(user, pass), nil
	}
	return nil, fmt.Errorf("--nats-creds (%s) %s: neither a NATS .creds file nor a line user:password", EnvNATSCreds, path)
}

// NewRegistry is a metrics registry with the Go runtime's and the
// process's collectors; each service adds its own.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// Metrics is a running Prometheus endpoint.
type Metrics struct {
	srv  *http.Server
	addr string
	done chan error
}

// ServeMetrics serves g on http://addr/metrics until Close. The address
// is bound before it returns (port 0 picks a free one: Addr says which).
func ServeMetrics(addr string, g prometheus.Gatherer, log zerolog.Logger) (*Metrics, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--metrics-addr (%s) %q: %w", EnvMetricsAddr, addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(g, promhttp.HandlerOpts{ErrorLog: errLog{log}}))
	m := &Metrics{srv: &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}, addr: ln.Addr().String(), done: make(chan error, 1)}
	go func() { m.done <- m.srv.Serve(ln) }()
	log.Info().Str("addr", m.addr).Msg("metrics_serving")
	return m, nil
}

// Addr is the address the endpoint listens on.
func (m *Metrics) Addr() string { return m.addr }

// Close stops the endpoint and waits for it.
func (m *Metrics) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := m.srv.Shutdown(ctx)
	if serr := <-m.done; serr != nil && !errors.Is(serr, http.ErrServerClosed) && err == nil {
		err = serr
	}
	return err
}

type errLog struct{ log zerolog.Logger }

func (e errLog) Println(v ...any) { e.log.Warn().Str("error", fmt.Sprint(v...)).Msg("metrics_error") }

// Started logs service_started with the version and the common settings
// (never a secret: the URL is redacted, the credentials file only named).
func (c *Common) Started(log zerolog.Logger, extra func(*zerolog.Event)) {
	e := log.Info().Str("version", Version).Str("log_level", c.LogLevel)
	if c.NATS != "" {
		e = e.Str("nats", redact(c.NATS))
	}
	if c.NATSCreds != "" {
		e = e.Str("nats_creds", c.NATSCreds)
	}
	if c.DataDir != "" {
		e = e.Str("data_dir", c.DataDir)
	}
	if c.MetricsAddr != "" {
		e = e.Str("metrics_addr", c.MetricsAddr)
	}
	if extra != nil {
		extra(e)
	}
	e.Msg("service_started")
}

// Stopped logs service_stopped: the service ended cleanly.
func Stopped(log zerolog.Logger) { log.Info().Msg("service_stopped") }

// redact hides the passwords of URLs (user:password@host).
func redact(urls string) string {
	parts := strings.Split(urls, ",")
	for i, u := range parts {
		if at := strings.LastIndexByte(u, '@'); at >= 0 {
			scheme := ""
			rest := u[:at]
			if k := strings.Index(rest, "://"); k >= 0 {
				scheme, rest = rest[:k+3], rest[k+3:]
			}
			user, _, _ := strings.Cut(rest, ":")
			parts[i] = scheme + user + ":xxx" + u[at:]
		}
	}
	return strings.Join(parts, ",")
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

// FlagNames are the names of the common flags Register adds for o, for
// the binaries' tests.
func FlagNames(o Options) []string {
	fs := flag.NewFlagSet("", flag.ContinueOnError)
	Register(fs, o)
	var names []string
	fs.VisitAll(func(f *flag.Flag) { names = append(names, f.Name) })
	return names
}
