// Command bai-registry runs bai's session registry: it projects the
// session log into a bbolt file and answers session list, get and history
// requests.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/bai-sh/bai/pkg/events"
	"github.com/bai-sh/bai/services/registry"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "bai-registry:", err)
		os.Exit(1)
	}
}

func run() error {
	fs := flag.NewFlagSet("bai-registry", flag.ContinueOnError)
	natsURL := fs.String("nats", envOr("BAI_NATS_URL", nats.DefaultURL), "NATS server URL, user:password@ allowed (env BAI_NATS_URL)")
	db := fs.String("db", envOr("BAI_REGISTRY_DB", defaultDB()), "bbolt file of the registry (env BAI_REGISTRY_DB)")
	durable := fs.String("durable", registry.DefaultDurable, "name of the session log consumer; one per registry file")
	admin := fs.String("admin-access-key", os.Getenv("BAI_ADMIN_ACCESS_KEY"), "the access key with the admin role (env BAI_ADMIN_ACCESS_KEY)")
	idle := fs.Duration("idle-timeout", 30*time.Minute, "the gateways' idle timeout, shown in idle_checks")
	debug := fs.Bool("debug", false, "log at debug level")
	if err := fs.Parse(os.Args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if *db == "" {
		return errors.New("no --db given and no home directory to default to")
	}
	level := zerolog.InfoLevel
	if *debug {
		level = zerolog.DebugLevel
	}
	log := zerolog.New(os.Stderr).Level(level).With().Timestamp().Logger()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	nc, err := nats.Connect(*natsURL, nats.Name("bai-registry"), nats.MaxReconnects(-1),
		// Its NATS permissions (package perms) let it read only this inbox.
		nats.CustomInboxPrefix(events.ServiceInboxPrefix("registry")))
	if err != nil {
		return fmt.Errorf("connect to %s: %w", *natsURL, err)
	}
	defer func() { _ = nc.Drain() }()

	svc, err := registry.New(registry.Config{NC: nc, Log: log, Path: *db, Durable: *durable, AdminAccessKey: *admin, IdleTimeout: *idle})
	if err != nil {
		return err
	}
	return svc.Run(ctx)
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
