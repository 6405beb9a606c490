package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/bai-sh/bai/internal/natstest"
)

// TestRefusesNATSWithoutAuth: against a NATS server that authenticates no
// one the gateway does not serve (any key would work with any secret)
// unless --insecure-no-auth; --bootstrap-admin-file without the callout's
// seed is refused before it connects.
func TestRefusesNATSWithoutAuth(t *testing.T) {
	ns := natstest.RunServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	err := run(ctx, []string{"--nats", ns.ClientURL()}, &natstest.SyncBuffer{})
	if err == nil || !strings.Contains(err.Error(), "--insecure-no-auth") {
		t.Fatalf("no auth, no flag: %v", err)
	}
	err = run(ctx, []string{"--nats", ns.ClientURL(), "--bootstrap-admin-file", filepath.Join(t.TempDir(), "a")}, &natstest.SyncBuffer{})
	if err == nil || !strings.Contains(err.Error(), "--auth-issuer-seed-file") {
		t.Fatalf("bootstrap without the callout: %v", err)
	}
}

// TestBootstrapAdminFile: a gateway running the callout with
// --bootstrap-admin-file writes a first admin keypair that connects
// through the callout; restarted, it keeps the file as it is.
func TestBootstrapAdminFile(t *testing.T) {
	issuer, err := nkeys.CreateAccount()
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := issuer.PublicKey()
	seed, _ := issuer.Seed()
	dir := t.TempDir()
	seedFile := filepath.Join(dir, "issuer.seed")
	if err := os.WriteFile(seedFile, seed, 0o600); err != nil {
		t.Fatal(err)
	}
	opts := natstest.Options(t.TempDir())
	opts.Users = []*natsserver.User{{Username: "bai-gateway", Password: "pw"}}
	opts.AuthCallout = &natsserver.AuthCallout{Issuer: pub, AuthUsers: []string{"bai-gateway"}}
	ns := natstest.RunServerWithOptions(t, opts)
	url := strings.Replace(ns.ClientURL(), "nats://", "nats://bai-gateway:pw@", 1)
	adminFile := filepath.Join(dir, "admin", "credentials.env")

	// start runs a gateway and returns once it serves and has bootstrapped.
	start := func() (context.CancelFunc, chan error) {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		logs := &natstest.SyncBuffer{}
		go func() {
			done <- run(ctx, []string{"--nats", url, "--auth-issuer-seed-file", seedFile, "--bootstrap-admin-file", adminFile,
				"--public-url", ns.ClientURL(), "--idle-timeout", "-1s"}, logs)
		}()
		natstest.CheckFor(t, 30*time.Second, 20*time.Millisecond, func() error {
			if l := logs.String(); !strings.Contains(l, "gateway_ready") || !strings.Contains(l, `"bootstrap_admin"`) {
				return fmt.Errorf("not ready: %s", l)
			}
			return nil
		})
		return cancel, done
	}
	stop := func(cancel context.CancelFunc, done chan error) {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("run: %v", err)
			}
		case <-time.After(20 * time.Second):
			t.Fatal("the gateway did not stop")
		}
	}
	cancel, done := start()
	var ak, sk string
	natstest.CheckFor(t, 30*time.Second, 50*time.Millisecond, func() error {
		data, err := os.ReadFile(adminFile)
		if err != nil {
			return err
		}
		a, s := strings.Index(string(data), "BAI_ACCESS_KEY='"), strings.Index(string(data), "BAI_SECRET_KEY='")
		if a < 0 || s < 0 || !strings.Contains(string(data), "BAI_NATS_URL='"+ns.ClientURL()+"'") {
			return fmt.Errorf("file %q", data)
		}
		ak, sk = string(data[a+16:a+36]), string(data[s+16:s+56])
		nc, err := nats.Connect(ns.ClientURL(), nats.UserInfo(ak, sk), nats.NoReconnect())
		if err != nil {
			return err
		}
		nc.Close()
		return nil
	})
	if nc, err := nats.Connect(ns.ClientURL(), nats.UserInfo(ak, "wrong"+sk[5:]), nats.NoReconnect()); err == nil {
		nc.Close()
		t.Fatal("a wrong secret connected")
	}
	stop(cancel, done)
	before, _ := os.ReadFile(adminFile)
	cancel, done = start()
	natstest.CheckFor(t, 30*time.Second, 50*time.Millisecond, func() error {
		nc, err := nats.Connect(ns.ClientURL(), nats.UserInfo(ak, sk), nats.NoReconnect())
		if err != nil {
			return err
		}
		nc.Close()
		return nil
	})
	stop(cancel, done)
	if after, _ := os.ReadFile(adminFile); string(after) != string(before) {
		t.Fatal("a restart rewrote the admin file")
	}
}
