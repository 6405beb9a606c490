package streams

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/bai-sh/bai/internal/natstest"
)

func TestRaise(t *testing.T) {
	const day = 24 * time.Hour
	base := jetstream.StreamConfig{Name: "S", Subjects: []string{"a.>"}, Replicas: 1, MaxAge: 30 * day, MaxBytes: 1 << 30, Duplicates: time.Minute}
	for _, tc := range []struct {
		name       string
		have, want func(*jetstream.StreamConfig)
		check      func(jetstream.StreamConfig) error
	}{
		{"operator's R3 kept", func(c *jetstream.StreamConfig) { c.Replicas = 3 }, nil, func(c jetstream.StreamConfig) error {
			return expect("replicas", c.Replicas, 3)
		}},
		{"R3 wanted raises R1", nil, func(c *jetstream.StreamConfig) { c.Replicas = 3 }, func(c jetstream.StreamConfig) error {
			return expect("replicas", c.Replicas, 3)
		}},
		{"larger MaxAge kept", func(c *jetstream.StreamConfig) { c.MaxAge = 90 * day }, nil, func(c jetstream.StreamConfig) error {
			return expect("max age", c.MaxAge, 90*day)
		}},
		{"smaller MaxAge raised", func(c *jetstream.StreamConfig) { c.MaxAge = day }, nil, func(c jetstream.StreamConfig) error {
			return expect("max age", c.MaxAge, 30*day)
		}},
		{"unlimited MaxAge kept", func(c *jetstream.StreamConfig) { c.MaxAge = 0 }, nil, func(c jetstream.StreamConfig) error {
			return expect("max age", c.MaxAge, 0)
		}},
		{"larger MaxBytes kept", func(c *jetstream.StreamConfig) { c.MaxBytes = 8 << 30 }, nil, func(c jetstream.StreamConfig) error {
			return expect("max bytes", c.MaxBytes, 8<<30)
		}},
		{"unlimited MaxBytes kept", func(c *jetstream.StreamConfig) { c.MaxBytes = -1 }, nil, func(c jetstream.StreamConfig) error {
			return expect("max bytes", c.MaxBytes, -1)
		}},
		{"unset MaxBytes leaves the operator's", func(c *jetstream.StreamConfig) { c.MaxBytes = 5 << 20 },
			func(c *jetstream.StreamConfig) { c.MaxBytes = 0 }, func(c jetstream.StreamConfig) error {
				return expect("max bytes", c.MaxBytes, 5<<20)
			}},
		{"longer duplicate window kept", func(c *jetstream.StreamConfig) { c.Duplicates = time.Hour }, nil, func(c jetstream.StreamConfig) error {
			return expect("duplicates", c.Duplicates, time.Hour)
		}},
		{"settings bai does not set kept", func(c *jetstream.StreamConfig) {
			c.MaxMsgs, c.Compression, c.Placement = 12345, jetstream.S2Compression, &jetstream.Placement{Tags: []string{"ssd"}}
		}, nil, func(c jetstream.StreamConfig) error {
			if c.MaxMsgs != 12345 || c.Compression != jetstream.S2Compression || c.Placement == nil {
				return fmt.Errorf("operator settings lost: %+v", c)
			}
			return nil
		}},
		{"subjects set back", func(c *jetstream.StreamConfig) { c.Subjects = []string{"b.>"} }, nil, func(c jetstream.StreamConfig) error {
			return expect("subjects", strings.Join(c.Subjects, ","), "a.>")
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			have, want := base, base
			if tc.have != nil {
				tc.have(&have)
			}
			if tc.want != nil {
				tc.want(&want)
			}
			got := raise(have, want)
			if err := tc.check(got); err != nil {
				t.Fatal(err)
			}
			if again := raise(got, want); !sameStream(got, again) {
				t.Fatalf("raise is not stable: %+v then %+v", got, again)
			}
		})
	}
}

func expect[T comparable](what string, got, want T) error {
	if got != want {
		return fmt.Errorf("%s %v, want %v", what, got, want)
	}
	return nil
}

// TestProvisionKeepsWhatAnOperatorRaised: streams and buckets edited by
// hand to keep more (as with nats stream edit) are not set back by the
// next provisioning, and one that lost a setting bai owns gets it back.
func TestProvisionKeepsWhatAnOperatorRaised(t *testing.T) {
	ns := natstest.RunServer(t)
	js, err := jetstream.New(natstest.Connect(t, ns))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := Provision(ctx, js, Options{}); err != nil {
		t.Fatal(err)
	}
	edit := func(name string, f func(*jetstream.StreamConfig)) {
		t.Helper()
		st, err := js.Stream(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		cfg := st.CachedInfo().Config
		f(&cfg)
		if _, err := js.UpdateStream(ctx, cfg); err != nil {
			t.Fatalf("edit %s: %v", name, err)
		}
	}
	edit(Sessions, func(c *jetstream.StreamConfig) { c.MaxAge, c.MaxMsgs = 365*24*time.Hour, 1<<40 })
	edit(Output, func(c *jetstream.StreamConfig) {
		c.MaxBytes, c.MaxAge, c.RePublish = 2<<30, 30*24*time.Hour, nil
	})
	edit("KV_"+Agents, func(c *jetstream.StreamConfig) { c.MaxBytes = 64 << 20 })
	for range 2 {
		if err := Provision(ctx, js, Options{SessionMaxAge: time.Hour, OutputMaxBytes: 1 << 20}); err != nil {
			t.Fatal(err)
		}
	}
	cfgOf := func(name string) jetstream.StreamConfig {
		st, err := js.Stream(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		return st.CachedInfo().Config
	}
	if c := cfgOf(Sessions); c.MaxAge != 365*24*time.Hour || c.MaxMsgs != 1<<40 {
		t.Errorf("session log set back: max age %s, max msgs %d", c.MaxAge, c.MaxMsgs)
	}
	c := cfgOf(Output)
	if c.MaxBytes != 2<<30 || c.MaxAge != 30*24*time.Hour {
		t.Errorf("output stream set back: max bytes %d, max age %s", c.MaxBytes, c.MaxAge)
	}
	if c.RePublish == nil {
		t.Error("output stream's live copy (owned by bai) not restored")
	}
	if c := cfgOf("KV_" + Agents); c.MaxBytes != 64<<20 {
		t.Errorf("agents bucket set back: max bytes %d", c.MaxBytes)
	}

	// The other buckets the services make: a raised MaxBytes stays, the
	// TTL (what a lease means) is bai's.
	lease := LeasesBucketConfig(Options{}, 6*time.Second)
	if _, err := ProvisionBucket(ctx, js, lease); err != nil {
		t.Fatal(err)
	}
	edit("KV_"+Leases, func(c *jetstream.StreamConfig) { c.MaxBytes, c.MaxAge = 1<<20, time.Minute })
	if _, err := ProvisionBucket(ctx, js, lease); err != nil {
		t.Fatal(err)
	}
	if c := cfgOf("KV_" + Leases); c.MaxBytes != 1<<20 || c.MaxAge != 6*time.Second {
		t.Errorf("leases bucket: max bytes %d (want the operator's 1 MiB), ttl %s (want bai's 6s)", c.MaxBytes, c.MaxAge)
	}
	obs := jetstream.ObjectStoreConfig{Bucket: "bai_test_obj", TTL: time.Hour}
	if _, err := ProvisionObjectStore(ctx, js, obs); err != nil {
		t.Fatal(err)
	}
	edit("OBJ_bai_test_obj", func(c *jetstream.StreamConfig) { c.MaxBytes = 1 << 30 })
	if _, err := ProvisionObjectStore(ctx, js, obs); err != nil {
		t.Fatal(err)
	}
	if c := cfgOf("OBJ_bai_test_obj"); c.MaxBytes != 1<<30 || c.MaxAge != time.Hour {
		t.Errorf("object store: max bytes %d, ttl %s", c.MaxBytes, c.MaxAge)
	}
}

// TestRetryStopsOnlyOnWhatWaitingCannotFix: a single server refuses R3 (a
// configuration error: no retry); a failing call is retried, with a
// callback per retry, until it succeeds.
func TestRetryStopsOnlyOnWhatWaitingCannotFix(t *testing.T) {
	ns := natstest.RunServer(t)
	js, err := jetstream.New(natstest.Connect(t, ns))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	retries := 0
	err = Retry(ctx, func(int, time.Duration, error) { retries++ }, func(ctx context.Context) error {
		return Provision(ctx, js, Options{Replicas: 3})
	})
	if err == nil || !Permanent(err) || retries != 0 {
		t.Fatalf("R3 on one server: err %v (permanent %v) after %d retries; want a permanent error at once", err, Permanent(err), retries)
	}
	calls := 0
	var waits []time.Duration
	err = Retry(ctx, func(_ int, wait time.Duration, _ error) { waits = append(waits, wait) }, func(ctx context.Context) error {
		if calls++; calls < 3 {
			return nats.ErrNoResponders
		}
		return nil
	})
	if err != nil || calls != 3 || len(waits) != 2 || waits[1] != 2*waits[0] {
		t.Fatalf("err %v after %d calls, waits %v", err, calls, waits)
	}
	// An attempt that used its whole time was the wait: the next goes at
	// once, and a quick failure after it waits as before.
	defer func(d time.Duration) { attemptTimeout = d }(attemptTimeout)
	attemptTimeout = 20 * time.Millisecond
	calls, waits = 0, nil
	err = Retry(ctx, func(_ int, wait time.Duration, _ error) { waits = append(waits, wait) }, func(ctx context.Context) error {
		switch calls++; calls {
		case 1, 2:
			<-ctx.Done() // no answer
			return ctx.Err()
		case 3:
			return nats.ErrNoResponders
		}
		return nil
	})
	if err != nil || calls != 4 || len(waits) != 3 || waits[0] != 0 || waits[1] != 0 || waits[2] != RetryFirstWait {
		t.Fatalf("after timed-out attempts: err %v after %d calls, waits %v", err, calls, waits)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := Retry(cctx, nil, func(context.Context) error { return nats.ErrNoResponders }); !errors.Is(err, context.Canceled) {
		t.Fatalf("retry after its context ended: %v", err)
	}
}

// runCluster starts a 3-node JetStream cluster in this process and waits
// for its meta leader.
func runCluster(t *testing.T) []*server.Server {
	t.Helper()
	ports := natstest.FreePorts(t, 3)
	var routes []string
	for _, p := range ports {
		routes = append(routes, fmt.Sprintf("nats://127.0.0.1:%d", p))
	}
	var nodes []*server.Server
	for i, p := range ports {
		opts := natstest.Options(t.TempDir())
		opts.ServerName = fmt.Sprintf("n%d", i+1)
		opts.Cluster = server.ClusterOpts{Name: "bai-test", Host: "127.0.0.1", Port: p}
		opts.Routes = server.RoutesFromStr(strings.Join(routes, ","))
		nodes = append(nodes, natstest.RunServerWithOptions(t, opts))
	}
	natstest.CheckFor(t, 30*time.Second, 50*time.Millisecond, func() error {
		leaders := 0
		for _, s := range nodes {
			if s.NumRoutes() < 2 {
				return fmt.Errorf("%s has %d routes", s.Name(), s.NumRoutes())
			}
			if !s.JetStreamIsCurrent() {
				return fmt.Errorf("%s not current", s.Name())
			}
			if s.JetStreamIsLeader() {
				leaders++
			}
		}
		if leaders != 1 {
			return fmt.Errorf("%d meta leaders", leaders)
		}
		return nil
	})
	return nodes
}

// TestProvisionOnThreeNodeCluster: against a 3-node cluster the default
// is R3 for every stream and bucket; one made R1 by an older version is
// raised to R3; an explicit R1 never lowers an R3 stream; and a single
// server defaults to R1.
func TestProvisionOnThreeNodeCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a 3-node cluster")
	}
	single := natstest.Connect(t, natstest.RunServer(t))
	if n := DefaultReplicas(single); n != 1 {
		t.Fatalf("one server: default replicas %d, want 1", n)
	}
	nodes := runCluster(t)
	nc := natstest.Connect(t, nodes[0])
	natstest.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if n := DefaultReplicas(nc); n != 3 {
			return fmt.Errorf("default replicas %d on a 3-node cluster (servers %v)", n, nc.Servers())
		}
		return nil
	})
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// An older version made the output stream R1.
	if _, err := js.CreateStream(ctx, OutputStreamConfig(Options{Replicas: 1})); err != nil {
		t.Fatal(err)
	}
	if err := Provision(ctx, js, Options{}); err != nil {
		t.Fatal(err)
	}
	lease, err := ProvisionBucket(ctx, js, LeasesBucketConfig(Options{}, 6*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := lease.Put(ctx, "k", []byte("v")); err != nil {
		t.Fatalf("put on the R3 bucket: %v", err)
	}
	// Explicit R1 (a service told --replicas 1) lowers nothing.
	if err := Provision(ctx, js, Options{Replicas: 1}); err != nil {
		t.Fatal(err)
	}
	if _, err := ProvisionBucket(ctx, js, LeasesBucketConfig(Options{Replicas: 1}, 6*time.Second)); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{Sessions, Work, Output, "KV_" + Agents, "KV_" + Leases} {
		st, err := js.Stream(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		if r := st.CachedInfo().Config.Replicas; r != 3 {
			t.Errorf("%s has %d replicas, want 3", name, r)
		}
	}
}

// TestRetryTransient: what NATS answers while it cannot serve is waited
// out; anything else (a refusal, an error that is not NATS's) ends the
// retry at once and is returned as it was.
func TestRetryTransient(t *testing.T) {
	for _, err := range []error{nats.ErrNoResponders, nats.ErrTimeout, context.DeadlineExceeded, jetstream.ErrJetStreamNotEnabled,
		&jetstream.APIError{Code: 503, ErrorCode: 10008, Description: "JetStream system temporarily unavailable"},
		&jetstream.APIError{Code: 500, ErrorCode: 10005, Description: "no suitable peers for placement"},
		fmt.Errorf("scheduler: agents bucket: %w", nats.ErrNoResponders)} {
		if !Transient(err) {
			t.Errorf("%v: not transient", err)
		}
	}
	disk := errors.New("write state: no space left on device")
	refused := &jetstream.APIError{Code: 400, ErrorCode: 10058, Description: "stream name already in use with a different configuration"}
	for _, want := range []error{disk, refused} {
		calls := 0
		err := RetryTransient(context.Background(), nil, func(context.Context) error {
			calls++
			return want
		})
		if calls != 1 || !errors.Is(err, want) {
			t.Errorf("%v: %d calls, returned %v", want, calls, err)
		}
	}
	calls := 0
	err := RetryTransient(context.Background(), nil, func(context.Context) error {
		if calls++; calls < 3 {
			return nats.ErrNoResponders
		}
		return nil
	})
	if err != nil || calls != 3 {
		t.Fatalf("after two transient errors: %v, %d calls", err, calls)
	}
}
