// Command bai-registry runs bai's session registry: it projects the
// session log into a bbolt file and answers session list, get and history
// requests.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/bai-sh/bai/pkg/events"
	"github.com/bai-sh/bai/pkg/events/streams"
	"github.com/bai-sh/bai/services/registry"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "bai-registry:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("bai-registry", flag.ContinueOnError)
	fs.SetOutput(stderr)
	natsURL := fs.String("nats", envOr("BAI_NATS_URL", nats.DefaultURL), "NATS server URL, user:password@ allowed (env BAI_NATS_URL)")
	db := fs.String("db", envOr("BAI_REGISTRY_DB", defaultDB()), "bbolt file of the registry (env BAI_REGISTRY_DB)")
	durable := fs.String("durable", registry.DefaultDurable, "name of the session log consumer; one per registry file")
	admin := fs.String("admin-access-key", os.Getenv("BAI_ADMIN_ACCESS_KEY"), "the access key with the admin role (env BAI_ADMIN_ACCESS_KEY)")
	idle := fs.Duration("idle-timeout", 30*time.Minute, "the gateways' idle timeout, shown in idle_checks")
	debug := fs.Bool("debug", false, "log at debug level")
	replicasFlag := fs.String("replicas", os.Getenv("BAI_REPLICAS"), "replicas of the streams and buckets it makes or raises (never lowers); 0: 3 on a cluster of 3 or more nodes, else 1 (env BAI_REPLICAS)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	replicas, err := parseReplicas(*replicasFlag)
	if err != nil {
		return err
	}
	if *db == "" {
		return errors.New("no --db given and no home directory to default to")
	}
	level := zerolog.InfoLevel
	if *debug {
		level = zerolog.DebugLevel
	}
	log := zerolog.New(stderr).Level(level).With().Timestamp().Logger()

	nc, err := nats.Connect(*natsURL, append(natsOptions("bai-registry", log),
		// Its NATS permissions (package perms) let it read only this inbox.
		nats.CustomInboxPrefix(events.ServiceInboxPrefix("registry")))...)
	if err != nil {
		return fmt.Errorf("connect to %s: %w", *natsURL, err)
	}
	defer func() { _ = nc.Drain() }()
	opts := streams.Options{Replicas: replicas}
	if err := waitNATS(ctx, nc, opts, log); err != nil {
		return err
	}

	svc, err := registry.New(registry.Config{NC: nc, Log: log, Path: *db, Durable: *durable, AdminAccessKey: *admin, IdleTimeout: *idle, Streams: opts})
	if err != nil {
		return err
	}
	return svc.Run(ctx)
}

// natsOptions connect for good: the first connection is retried while
// the server is unreachable, and a lost one reconnects without end, each
// with a log line.
func natsOptions(name string, log zerolog.Logger) []nats.Option {
	return []nats.Option{
		nats.Name(name), nats.MaxReconnects(-1), nats.RetryOnFailedConnect(true), nats.ReconnectWait(time.Second),
		nats.ConnectHandler(func(nc *nats.Conn) { log.Info().Str("server", nc.ConnectedUrlRedacted()).Msg("nats_connected") }),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) { log.Warn().Err(err).Msg("nats_disconnected") }),
		nats.ReconnectHandler(func(nc *nats.Conn) { log.Info().Str("server", nc.ConnectedUrlRedacted()).Msg("nats_reconnected") }),
		nats.ReconnectErrHandler(func(_ *nats.Conn, err error) { log.Warn().Err(err).Msg("nats_unreachable_retrying") }),
	}
}

// waitNATS returns once the streams are provisioned, retrying while NATS
// is unreachable or electing.
func waitNATS(ctx context.Context, nc *nats.Conn, opts streams.Options, log zerolog.Logger) error {
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	return streams.WaitProvision(ctx, js, opts, func(attempt int, wait time.Duration, err error) {
		log.Warn().Err(err).Int("attempt", attempt).Dur("retry_in", wait).Msg("nats_not_ready_waiting")
	})
}

// parseReplicas reads --replicas (or BAI_REPLICAS): empty is 0.
func parseReplicas(v string) (int, error) {
	if v == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 || n > 5 {
		return 0, fmt.Errorf("--replicas (BAI_REPLICAS) %q: want 0 (from the cluster size) or a count from 1 to 5", v)
	}
	return n, nil
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

// defaultDB is $XDG_DATA_HOME/bai/registry.db, or ~/.local/share/bai/registry.db.
func defaultDB() string {
	if d := os.Getenv("XDG_DATA_HOME"); d != "" {
		return filepath.Join(d, "bai", "registry.db")
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return ""
	}
	return filepath.Join(home, ".local", "share", "bai", "registry.db")
}
