package server

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/bai-sh/bai/pkg/events/streams"
)

// Defaults of the storage settings (Config).
const (
	// DefaultMinFreeDisk is the free space under which the server stores
	// nothing new (Config.MinFreeDisk).
	DefaultMinFreeDisk = 64 << 20
	// storagePoll is how often the guard looks at the disk.
	storagePoll = 500 * time.Millisecond
	// errFresh is how old a look at the disk Err answers with.
	errFresh = 50 * time.Millisecond
	// restartPause is the least time between two JetStream restarts.
	restartPause = 5 * time.Second
)

// storageGuard watches the disk JetStream stores on. A JetStream stream
// that once failed to write (the disk full) refuses every later write
// without an answer, until JetStream is started again (nats-server keeps
// the write error in the stream: its publishers wait for their timeout).
// The guard:
//
//   - says why the server stores nothing (Err), while the disk has less
//     than minFree free or a write failed: the gateway answers a request
//     that would write with it at once (gateway.Config.Storage);
//   - logs the disk's state changes and nats-server's write errors;
//   - once the disk has space again after a failed write, restarts
//     JetStream in the running server: its streams are read back from
//     the disk, without the write error, and every service's consumers
//     carry on as after a NATS restart.
type storageGuard struct {
	dir     string
	minFree int64
	log     zerolog.Logger
	restart func() error // restarts JetStream

	mu       sync.Mutex
	looked   time.Time // when free was read
	free     int64
	full     bool
	logged   bool      // the log says the disk is full
	failed   string    // the write error seen since JetStream last started
	restarts time.Time // the last restart
}

// Err says why the server stores nothing now; nil when it does. It looks
// at the disk itself when the last look is older than errFresh, so that a
// disk that just filled refuses the next request.
func (g *storageGuard) Err() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if time.Since(g.looked) > errFresh {
		if free, err := freeBytes(g.dir); err == nil {
			g.looked, g.free, g.full = time.Now(), free, free < g.minFree
		}
	}
	switch {
	case g.full:
		return fmt.Errorf("the server is out of disk space: %s free in %s, it stores nothing new under %s; free space there and it resumes by itself",
			bytesText(g.free), g.dir, bytesText(g.minFree))
	case g.failed != "":
		return fmt.Errorf("the server could not write to its store in %s (%s); it resumes by itself once the disk has space", g.dir, g.failed)
	}
	return nil
}

// writeFailed records a write error nats-server logged.
func (g *storageGuard) writeFailed(msg string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.failed == "" {
		g.failed = msg
	}
}

// check looks at the disk once: it logs a change, and restarts JetStream
// after a failed write once there is space again.
func (g *storageGuard) check() {
	free, err := freeBytes(g.dir)
	if err != nil {
		g.log.Warn().Err(err).Str("dir", g.dir).Msg("disk_space_unknown")
		return
	}
	g.mu.Lock()
	wasFull := g.logged
	g.looked, g.free, g.full = time.Now(), free, free < g.minFree
	g.logged = g.full
	full, failed := g.full, g.failed
	due := failed != "" && !full && time.Since(g.restarts) >= restartPause
	if due {
		g.restarts = time.Now()
	}
	g.mu.Unlock()
	switch {
	case full && !wasFull:
		g.log.Error().Str("dir", g.dir).Int64("free_bytes", free).Int64("min_free_bytes", g.minFree).
			Msg("out_of_disk_space: new sessions, executions and uploads are refused until space is freed; running sessions go on")
	case !full && wasFull:
		g.log.Info().Str("dir", g.dir).Int64("free_bytes", free).Msg("disk_space_back")
	}
	if !due {
		return
	}
	g.log.Warn().Str("write_error", failed).Msg("jetstream_restarting: its streams failed a write, the disk has space again")
	if err := g.restart(); err != nil {
		g.log.Error().Err(err).Msg("jetstream_restart_failed")
		return
	}
	g.mu.Lock()
	g.failed = ""
	g.mu.Unlock()
	g.log.Info().Msg("jetstream_restarted")
}

// run checks the disk every storagePoll until ctx ends.
func (g *storageGuard) run(ctx context.Context) {
	t := time.NewTicker(storagePoll)
	defer t.Stop()
	for {
		g.check()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// restartJetStream stops JetStream in ns and starts it again with the
// same limits: its streams are recovered from the disk.
func restartJetStream(ns *natsserver.Server) error {
	cfg := ns.JetStreamConfig()
	if cfg == nil {
		return errors.New("jetstream is not running")
	}
	if err := ns.ShutdownJetStream(); err != nil {
		return fmt.Errorf("stop jetstream: %w", err)
	}
	// EnableJetStream adds the "jetstream" directory to StoreDir itself.
	return ns.EnableJetStream(&natsserver.JetStreamConfig{
		MaxMemory: cfg.MaxMemory, MaxStore: cfg.MaxStore, StoreDir: filepath.Dir(cfg.StoreDir),
		SyncInterval: cfg.SyncInterval, SyncAlways: cfg.SyncAlways, Strict: cfg.Strict,
	})
}

// freeBytes is the space an unprivileged writer may still use under dir.
func freeBytes(dir string) (int64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, err
	}
	return int64(st.Bavail) * int64(st.Bsize), nil
}

// bytesText is n in binary units for people.
func bytesText(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

// natsLogger gives nats-server's log to zerolog: errors and warnings as
// they are, notices at debug (its start banner is long), nothing of its
// debug and trace. Its write errors go to the storage guard: nats-server
// says them only in its log.
type natsLogger struct {
	log   zerolog.Logger
	guard *storageGuard
}

func (l *natsLogger) Noticef(format string, v ...any) {
	l.log.Debug().Msg(fmt.Sprintf(format, v...))
}

func (l *natsLogger) Warnf(format string, v ...any) {
	msg := fmt.Sprintf(format, v...)
	if strings.HasPrefix(msg, "Plaintext passwords detected") {
		// The service users' passwords: random at each start, in memory
		// only, never on the network (in-process connections).
		l.log.Debug().Msg(msg)
		return
	}
	l.log.Warn().Msg(msg)
	l.storage(msg)
}

func (l *natsLogger) Errorf(format string, v ...any) {
	msg := fmt.Sprintf(format, v...)
	l.log.Error().Msg(msg)
	l.storage(msg)
}

func (l *natsLogger) Fatalf(format string, v ...any) {
	l.log.Error().Bool("fatal", true).Msg(fmt.Sprintf(format, v...))
}

func (l *natsLogger) Debugf(string, ...any) {}
func (l *natsLogger) Tracef(string, ...any) {}

// storage passes a write error to the guard. nats-server says "critical
// write error" when a stream or its file store keeps a write error, and
// "failed to store a msg" or "no space left on device" for the write
// that failed.
func (l *natsLogger) storage(msg string) {
	if l.guard == nil {
		return
	}
	m := strings.ToLower(msg)
	if strings.Contains(m, "write error") || strings.Contains(m, "no space left on device") ||
		strings.Contains(m, "failed to store a msg") || strings.Contains(m, "disk quota exceeded") {
		l.guard.writeFailed(msg)
	}
}

// insufficientStorage is nats-server's error code for a stream whose
// reservation (MaxBytes) JetStream's store limit cannot hold.
var insufficientStorage = natsserver.ApiErrors[natsserver.JSStorageResourcesExceededErr].ErrCode

// explainProvision turns JetStream's refusal to reserve the output
// stream's bytes into what the operator can do.
func explainProvision(err error, ns *natsserver.Server, opts streams.Options, dir string) error {
	var ae *jetstream.APIError
	if !errors.As(err, &ae) || uint16(ae.ErrorCode) != insufficientStorage {
		return fmt.Errorf("server: streams: %w", err)
	}
	var limit, reserved int64
	if cfg := ns.JetStreamConfig(); cfg != nil {
		limit = cfg.MaxStore
	}
	if _, r, rerr := ns.JetStreamReservedResources(); rerr == nil {
		reserved = r
	}
	free, _ := freeBytes(dir)
	want := opts.OutputMaxBytes
	if want <= 0 {
		want = streams.DefaultOutputMaxBytes
	}
	return fmt.Errorf("server: JetStream may store %s in %s (%s reserved already; %s free there, of which it takes 3/4 unless --jetstream-max-store says), "+
		"and the output stream reserves %s (--output-max-bytes): free at least %s there, or lower --output-max-bytes: %w",
		bytesText(limit), dir, bytesText(reserved), bytesText(free), bytesText(want),
		bytesText(max((want+reserved-limit)*4/3, 0)), err)
}
