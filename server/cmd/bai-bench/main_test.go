package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bai-sh/bai/internal/natstest"
	"github.com/bai-sh/bai/pkg/events"
	"github.com/bai-sh/bai/server"
	"github.com/bai-sh/bai/tools/bai/client"
)

// TestScenarios runs each load scenario tiny: the harness works end to
// end (every accepted session reaches RUNNING; ps answers a full page).
// It asserts no speed.
func TestScenarios(t *testing.T) {
	base := options{agents: 3, agentsConn: 2, sessions: 40, concurrency: 8, rate: 2000,
		psSessions: 30, psQueries: 5, timeout: time.Minute}
	for _, sc := range []string{"closed", "open", "flood", "floor", "ps"} {
		t.Run(sc, func(t *testing.T) {
			o := base
			o.scenario = sc
			o.dir = t.TempDir()
			if err := run(o); err != nil {
				t.Fatal(err)
			}
		})
	}
	t.Run("batch", func(t *testing.T) {
		o := base
		o.scenario, o.sessions, o.concurrency = "batch", 4, 2
		o.dir = t.TempDir()
		if err := run(o); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("runpath", func(t *testing.T) {
		if os.Geteuid() != 0 {
			t.Skip("the sandbox needs root")
		}
		if _, err := findPython(); err != nil {
			t.Skip("no python3")
		}
		o := base
		o.scenario, o.cliRuns, o.timeout = "runpath", 1, 5*time.Minute
		o.dir = t.TempDir()
		if err := run(o); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("pings", func(t *testing.T) {
		o := base
		o.scenario, o.pingWindow = "pings", 50*time.Millisecond
		o.dir = t.TempDir()
		if err := run(o); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("unknown", func(t *testing.T) {
		o := base
		o.scenario = "nope"
		o.dir = t.TempDir()
		if err := run(o); err == nil {
			t.Fatal("unknown scenario: no error")
		}
	})
}

// TestExternal drives a running bai-server (its own NATS, services and
// process agent) through -credentials and -nats-url, as make
// bench-cluster drives a cluster: every session reaches RUNNING and is
// removed. Flags that cannot apply to a running bai are refused.
func TestExternal(t *testing.T) {
	dir := t.TempDir()
	srv, err := server.New(server.Config{DataDir: filepath.Join(dir, "bai"), Listen: "127.0.0.1:-1",
		AgentCapacity: map[string]string{"cpu": "4", "mem": "4g"}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	select {
	case <-srv.Ready():
	case err := <-done:
		t.Fatal(err)
	}
	base := options{sessions: 30, concurrency: 6, rate: 200, timeout: 2 * time.Minute, credentials: srv.CredentialsPath()}
	for _, sc := range []string{"closed", "open"} {
		t.Run(sc, func(t *testing.T) {
			o := base
			o.scenario, o.dir = sc, t.TempDir()
			if err := run(o); err != nil {
				t.Fatal(err)
			}
		})
	}
	t.Run("nats-url", func(t *testing.T) {
		creds := srv.Credentials()
		t.Setenv(client.EnvAccessKey, creds.AccessKey)
		t.Setenv(client.EnvSecretKey, creds.SecretKey)
		o := base
		o.scenario, o.dir, o.credentials, o.natsURL, o.sessions = "closed", t.TempDir(), "", srv.ClientURL(), 10
		if err := run(o); err != nil {
			t.Fatal(err)
		}
	})
	// Every session of the runs was removed: nothing is left running.
	cl, err := client.Connect(context.Background(), client.Options{URL: srv.ClientURL(),
		AccessKey: srv.Credentials().AccessKey, SecretKey: srv.Credentials().SecretKey})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	natstest.CheckFor(t, time.Minute, 50*time.Millisecond, func() error {
		l, err := cl.List(context.Background(), events.ListRequest{Limit: 100})
		if err != nil {
			return err
		}
		if len(l.Sessions) > 0 {
			return fmt.Errorf("%d sessions still listed after the runs, first %s (%s)", len(l.Sessions), l.Sessions[0].ID, l.Sessions[0].Status)
		}
		return nil
	})
	for name, o := range map[string]options{
		"a scenario that starts its own": {scenario: "ps", credentials: base.credentials},
		"sync-always":                    {scenario: "closed", credentials: base.credentials, syncAlways: true},
		"no key":                         {scenario: "closed", natsURL: srv.ClientURL()},
		"a missing credentials file":     {scenario: "closed", credentials: filepath.Join(dir, "none.env")},
	} {
		t.Run(name, func(t *testing.T) {
			t.Setenv(client.EnvAccessKey, "")
			t.Setenv(client.EnvSecretKey, "")
			o.dir, o.timeout, o.sessions, o.concurrency = t.TempDir(), time.Minute, 1, 1
			err := run(o)
			if err == nil || strings.Contains(err.Error(), "RUNNING") {
				t.Fatalf("refused with a clear error, got %v", err)
			}
			t.Log(err)
		})
	}
}
