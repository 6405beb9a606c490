// Command bai-registry runs bai's session registry: it projects the
// session log into a bbolt file and answers session list, get and history
// requests.
//
// It takes the common flags of every bai binary (package svcflags:
// --nats, --nats-creds, --data-dir, --log-level, --log-format,
// --metrics-addr, --replicas and their BAI_* variables).
package main

import (
	"context"
	"errors"
	"flag"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/bai-sh/bai/pkg/events"
	"github.com/bai-sh/bai/pkg/events/streams"
	"github.com/bai-sh/bai/pkg/svcflags"
	"github.com/bai-sh/bai/services/registry"
)

func main() { svcflags.Main("bai-registry", run) }

func run(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("bai-registry", flag.ContinueOnError)
	fs.SetOutput(stderr)
	common := svcflags.Register(fs, svcflags.Options{NATS: true, Replicas: true, DataDir: defaultDataDir()})
	db := fs.String("db", os.Getenv("BAI_REGISTRY_DB"), "bbolt file of the registry (env BAI_REGISTRY_DB); default: registry.db in --data-dir")
	durable := fs.String("durable", registry.DefaultDurable, "name of the session log consumer; one per registry file")
	admin := fs.String("admin-access-key", os.Getenv("BAI_ADMIN_ACCESS_KEY"), "the access key with the admin role (env BAI_ADMIN_ACCESS_KEY)")
	idle := fs.Duration("idle-timeout", 30*time.Minute, "the gateways' idle timeout, shown in idle_checks")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	replicas, err := svcflags.ParseReplicas(common.Replicas)
	if err != nil {
		return err
	}
	if *db == "" && common.DataDir != "" {
		*db = filepath.Join(common.DataDir, "registry.db")
	}
	if *db == "" {
		return errors.New("no --db or --data-dir given and no home directory to default to")
	}
	log, metrics, stopMetrics, err := common.Setup(stderr, "bai-registry")
	if err != nil {
		return err
	}
	defer stopMetrics()
	common.Started(log, func(e *zerolog.Event) { e.Str("db", *db).Str("durable", *durable) })
	opts := streams.Options{Replicas: replicas}
	// Its NATS permissions (package perms) let it read only this inbox.
	nc, err := common.Connect(ctx, "bai-registry", log, opts, nats.CustomInboxPrefix(events.ServiceInboxPrefix("registry")))
	if err != nil {
		return err
	}
	defer func() { _ = nc.Drain() }()
	svc, err := registry.New(registry.Config{NC: nc, Log: log, Path: *db, Durable: *durable, AdminAccessKey: *admin, IdleTimeout: *idle,
		Streams: opts, Metrics: metrics})
	if err != nil {
		return err
	}
	if err := svc.Run(ctx); err != nil {
		return err
	}
	svcflags.Stopped(log)
	return nil
}

// defaultDataDir is $XDG_DATA_HOME/bai, or ~/.local/share/bai.
func defaultDataDir() string {
	if d := os.Getenv("XDG_DATA_HOME"); d != "" {
		return filepath.Join(d, "bai")
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return ""
	}
	return filepath.Join(home, ".local", "share", "bai")
}
