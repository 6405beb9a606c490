package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/bai-sh/bai/internal/natstest"
	"github.com/bai-sh/bai/pkg/events"
	"github.com/bai-sh/bai/tools/bai/cli"
	"github.com/bai-sh/bai/tools/bai/client"
)

// tenant is a keypair made by the admin for a test.
type tenant struct{ ak, sk string }

func (r *running) newTenant(t *testing.T, role, policy string) tenant {
	t.Helper()
	kp, err := r.client(t).AddKeypair(context.Background(), events.KeypairAddRequest{Role: role, Policy: policy})
	if err != nil {
		t.Fatal(err)
	}
	if len(kp.AccessKey) != 20 || !strings.HasPrefix(kp.AccessKey, "AKIA") || len(kp.SecretKey) != 40 {
		t.Fatalf("new keypair %+v", kp)
	}
	return tenant{kp.AccessKey, kp.SecretKey}
}

// baiAs runs the CLI as tn.
func (r *running) baiAs(t *testing.T, tn tenant, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	code = cli.Run(ctx, append([]string{"bai"}, args...), &out, &errb,
		cli.Env{NATSURL: r.srv.ClientURL(), AccessKey: tn.ak, SecretKey: tn.sk})
	return code, out.String(), errb.String()
}

func (r *running) clientAs(t *testing.T, tn tenant) *client.Client {
	t.Helper()
	cl, err := client.Connect(context.Background(), client.Options{URL: r.srv.ClientURL(), AccessKey: tn.ak, SecretKey: tn.sk})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

// rawConn is a plain NATS connection as tn (what an attacker with A's
// keys can do without bai), collecting the server's asynchronous errors.
type rawConn struct {
	nc   *nats.Conn
	errs chan error
}

func (r *running) rawAs(t *testing.T, tn tenant, opts ...nats.Option) *rawConn {
	t.Helper()
	rc := &rawConn{errs: make(chan error, 64)}
	opts = append([]nats.Option{
		nats.UserInfo(tn.ak, tn.sk), nats.CustomInboxPrefix(events.InboxPrefix(tn.ak)), nats.NoReconnect(),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			select {
			case rc.errs <- err:
			default:
			}
		}),
	}, opts...)
	nc, err := nats.Connect(r.srv.ClientURL(), opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	rc.nc = nc
	return rc
}

// denied waits for the server's permissions violation naming subject (or
// a subject that starts with it).
func (rc *rawConn) denied(t *testing.T, what, subject string) {
	t.Helper()
	timeout := time.After(5 * time.Second)
	for {
		select {
		case err := <-rc.errs:
			if errors.Is(err, nats.ErrPermissionViolation) && strings.Contains(err.Error(), `"`+subject) {
				return
			}
		case <-timeout:
			t.Fatalf("%s %s: no permissions violation from the server", what, subject)
		}
	}
}

// startSleeper starts a session as tn that stays running.
// rawAgent connects as the embedded agent's NATS user; it returns the
// connection and the agent id the user is scoped to.
func (r *running) rawAgent(t *testing.T) (*rawConn, string) {
	t.Helper()
	r.srv.mu.Lock()
	pass, agentID := r.srv.auth.passwords["bai-agent"], r.srv.auth.agentID
	r.srv.mu.Unlock()
	rc := &rawConn{errs: make(chan error, 64)}
	var err error
	rc.nc, err = nats.Connect(r.srv.ClientURL(), nats.UserInfo("bai-agent", pass), nats.NoReconnect(),
		nats.CustomInboxPrefix(events.AgentInboxPrefix(agentID)),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { rc.errs <- err }))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(rc.nc.Close)
	return rc, agentID
}

func (r *running) startSleeper(t *testing.T, tn tenant) string {
	t.Helper()
	code, out, errOut := r.baiAs(t, tn, "start", "python")
	id := strings.TrimSpace(out)
	if code != 0 || !events.ValidToken(id) {
		t.Fatalf("start as %s: %d %q %q", tn.ak, code, out, errOut)
	}
	cl := r.clientAs(t, tn)
	natstest.CheckFor(t, 20*time.Second, 10*time.Millisecond, func() error {
		info, err := cl.Get(context.Background(), id)
		if err != nil {
			return err
		}
		if info.Status != events.StatusRunning {
			return fmt.Errorf("%s", info.Status)
		}
		return nil
	})
	return id
}

func TestTenantCannotSubscribeToOthers(t *testing.T) {
	r := startServer(t, t.TempDir())
	a, b := r.newTenant(t, "user", ""), r.newTenant(t, "user", "")
	bSessions, _ := events.OwnerSessionsFilter(b.ak)
	bLive, _ := events.LiveOwnerSessionsFilter(b.ak)
	aRaw, _ := events.OwnerSessionsFilter(a.ak) // its own, but not the live copy
	bOutput, _ := events.OwnerOutputFilter(b.ak)
	bLiveOutput, _ := events.LiveOwnerOutputFilter(b.ak)
	aRawOutput, _ := events.OwnerOutputFilter(a.ak)
	rc := r.rawAs(t, a)
	for _, subj := range []string{
		bSessions, bLive, aRaw, bOutput, bLiveOutput, aRawOutput, events.AllSessionsFilter, events.LiveAllSessionsFilter,
		events.AllOutputFilter, events.LiveAllOutputFilter, "bai.>", "bai.live.>", ">",
		"_INBOX.>", events.InboxPrefix(b.ak) + ".>", "$JS.API.>", "$KV.>", "$SYS.>",
	} {
		if _, err := rc.nc.SubscribeSync(subj); err != nil {
			t.Fatal(err)
		}
		rc.denied(t, "subscribe", subj)
	}
	// A's own subjects are allowed, and B's session events never reach A.
	own, _ := events.LiveOwnerSessionsFilter(a.ak)
	sub, err := rc.nc.SubscribeSync(own)
	if err != nil {
		t.Fatal(err)
	}
	if err := rc.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	id := r.startSleeper(t, b)
	if m, err := sub.NextMsg(100 * time.Millisecond); err == nil {
		t.Fatalf("A got %s", m.Subject)
	}
	select {
	case err := <-rc.errs:
		t.Fatalf("subscribing to its own subjects: %v", err)
	default:
	}
	_ = id
}

func TestTenantHasNoJetStream(t *testing.T) {
	r := startServer(t, t.TempDir())
	a := r.newTenant(t, "user", "")
	rc := r.rawAs(t, a)
	js, err := jetstream.New(rc.nc)
	if err != nil {
		t.Fatal(err)
	}
	var ctx context.Context
	attempts := []struct {
		name, subject string
		do            func() error
	}{
		{"consumer", "$JS.API.CONSUMER.CREATE.BAI_SESSIONS", func() error {
			_, err := js.CreateOrUpdateConsumer(ctx, "BAI_SESSIONS", jetstream.ConsumerConfig{FilterSubject: events.AllSessionsFilter})
			return err
		}},
		{"multi-filter consumer", "$JS.API.CONSUMER.CREATE.BAI_SESSIONS", func() error {
			_, err := js.CreateOrUpdateConsumer(ctx, "BAI_SESSIONS", jetstream.ConsumerConfig{FilterSubjects: []string{"bai.session.*.x.>", "bai.session.>"}})
			return err
		}},
		{"kv", "$JS.API.STREAM.INFO.KV_bai_keypairs", func() error {
			_, err := js.KeyValue(ctx, "bai_keypairs")
			return err
		}},
		{"object store", "$JS.API.STREAM.INFO.OBJ_files", func() error {
			_, err := js.ObjectStore(ctx, "files")
			return err
		}},
		{"direct get", "$JS.API.DIRECT.GET.KV_bai_keypairs", func() error {
			_, err := rc.nc.Request("$JS.API.DIRECT.GET.KV_bai_keypairs", []byte(`{"last_by_subj":"$KV.bai_keypairs.>"}`), 300*time.Millisecond)
			return err
		}},
		{"stream list", "$JS.API.STREAM.NAMES", func() error {
			_, err := rc.nc.Request("$JS.API.STREAM.NAMES", nil, 300*time.Millisecond)
			return err
		}},
	}
	for _, at := range attempts {
		c, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		ctx = c
		err := at.do()
		cancel()
		if err == nil {
			t.Fatalf("%s: allowed", at.name)
		}
		rc.denied(t, at.name, at.subject)
	}
}

func TestTenantCannotTouchOthersSessions(t *testing.T) {
	r := startServer(t, t.TempDir())
	a, b := r.newTenant(t, "user", ""), r.newTenant(t, "user", "")
	id := r.startSleeper(t, b)
	info, err := r.clientAs(t, b).Get(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}

	// Straight to B's API subjects: the server drops it.
	rc := r.rawAs(t, a)
	for _, op := range []string{events.OpSessionTerminate, events.OpSessionGet, events.OpKeypairList} {
		subj, _ := events.APISubject(b.ak, op)
		if _, err := rc.nc.Request(subj, []byte(`{"session_id":"`+id+`","ref":"`+id+`"}`), 500*time.Millisecond); err == nil {
			t.Fatalf("request on %s answered", subj)
		}
		rc.denied(t, "publish", subj)
	}

	// Through the CLI, by id and by name: not found for A.
	for _, args := range [][]string{
		{"rm", id}, {"rm", info.Name}, {"events", id}, {"events", info.Name},
	} {
		code, out, errOut := r.baiAs(t, a, args...)
		if code == 0 || !strings.Contains(errOut, "not found") {
			t.Fatalf("A: bai %v: code %d out %q err %q", args, code, out, errOut)
		}
	}
	code, out, errOut := r.baiAs(t, a, "--output", "json", "ps", "--all")
	if code != 0 || strings.Contains(out, id) {
		t.Fatalf("A: ps: %d %q %q", code, out, errOut)
	}
	// Admin commands are refused to a user.
	code, _, errOut = r.baiAs(t, a, "admin", "keypair", "list")
	if code == 0 || !strings.Contains(errOut, "not an admin") {
		t.Fatalf("A: admin keypair list: %d %q", code, errOut)
	}
	after, err := r.clientAs(t, b).Get(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	if after.Status != events.StatusRunning || after.LastSeq != info.LastSeq {
		t.Fatalf("B's session changed: %+v -> %+v", info, after)
	}
}

func TestBadCredentialsAreRefused(t *testing.T) {
	r := startServer(t, t.TempDir())
	a := r.newTenant(t, "user", "")
	revoked := r.newTenant(t, "user", "")
	if _, err := r.client(t).RemoveKeypair(context.Background(), revoked.ak); err != nil {
		t.Fatal(err)
	}
	for name, tn := range map[string]tenant{
		"wrong secret":  {a.ak, strings.Repeat("x", 40)},
		"short secret":  {a.ak, "x"},
		"unknown key":   {"AKIA0000000000000000", a.sk},
		"revoked key":   revoked,
		"malformed key": {"AKIA.>", a.sk},
	} {
		_, err := client.Connect(context.Background(), client.Options{URL: r.srv.ClientURL(), AccessKey: tn.ak, SecretKey: tn.sk})
		if !errors.Is(err, client.ErrAuth) {
			t.Errorf("%s: %v, want an auth error", name, err)
		}
		code, _, errOut := r.baiAs(t, tn, "ps")
		if code != cli.ExitFailure || !strings.Contains(errOut, "refused the credentials") {
			t.Errorf("%s: bai ps: %d %q", name, code, errOut)
		}
	}
	// No credentials at all, straight at the server.
	if _, err := nats.Connect(r.srv.ClientURL(), nats.NoReconnect()); !errors.Is(err, nats.ErrAuthorization) {
		t.Errorf("no credentials: %v", err)
	}
	if _, err := nats.Connect(r.srv.ClientURL(), nats.UserInfo("bai-gateway", ""), nats.NoReconnect()); !errors.Is(err, nats.ErrAuthorization) {
		t.Errorf("service user without password: %v", err)
	}
}

func TestRevokeAndRotateCloseConnections(t *testing.T) {
	r := startServer(t, t.TempDir())
	admin := r.client(t)
	for _, op := range []string{"rm", "rotate"} {
		t.Run(op, func(t *testing.T) {
			tn := r.newTenant(t, "user", "")
			rc := r.rawAs(t, tn)
			var rotated *events.KeypairInfo
			var err error
			if op == "rm" {
				_, err = admin.RemoveKeypair(context.Background(), tn.ak)
			} else {
				rotated, err = admin.RotateKeypair(context.Background(), tn.ak)
			}
			if err != nil {
				t.Fatal(err)
			}
			natstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
				if !rc.nc.IsClosed() {
					return errors.New("connection still open")
				}
				return nil
			})
			if _, err := client.Connect(context.Background(), client.Options{URL: r.srv.ClientURL(), AccessKey: tn.ak, SecretKey: tn.sk}); !errors.Is(err, client.ErrAuth) {
				t.Fatalf("old secret: %v", err)
			}
			if rotated != nil {
				if len(rotated.SecretKey) != 40 || rotated.SecretKey == tn.sk {
					t.Fatalf("rotated: %+v", rotated)
				}
				r.clientAs(t, tenant{tn.ak, rotated.SecretKey}) // the new one works
			}
		})
	}
}

func TestAdminKeypairCLI(t *testing.T) {
	dir := t.TempDir()
	r := startServer(t, dir)
	code, out, errOut := r.bai(t, "--output", "json", "admin", "keypair", "add", "--email", "a@example.com", "--group", "ml", "--policy", "nope")
	if code == 0 || !strings.Contains(errOut, `no such resource policy "nope"`) {
		t.Fatalf("add with unknown policy: %d %q %q", code, out, errOut)
	}
	if code, out, errOut = r.bai(t, "admin", "policy", "add", "--max-concurrent-sessions", "2", "--total-slots", "cpu=2", "small"); code != 0 {
		t.Fatalf("policy add: %d %q %q", code, out, errOut)
	}
	if code, _, errOut = r.bai(t, "admin", "policy", "add", "--max-concurrent-sessions", "-1", "bad name"); code != cli.ExitInvalid {
		t.Fatalf("bad policy: %d %q", code, errOut)
	}
	code, out, errOut = r.bai(t, "--output", "json", "admin", "keypair", "add", "--email", "a@example.com", "--group", "ml", "--policy", "small")
	var kp events.KeypairInfo
	if code != 0 || json.Unmarshal([]byte(out), &kp) != nil || kp.Role != "user" || kp.Policy != "small" || len(kp.SecretKey) != 40 {
		t.Fatalf("keypair add: %d %q %q", code, out, errOut)
	}
	code, out, _ = r.bai(t, "admin", "keypair", "list")
	if code != 0 || !strings.Contains(out, kp.AccessKey) || !strings.Contains(out, r.srv.Credentials().AccessKey) || strings.Contains(out, kp.SecretKey) {
		t.Fatalf("keypair list: %d %q", code, out)
	}
	code, out, _ = r.bai(t, "--output", "json", "admin", "keypair", "info", kp.AccessKey)
	if code != 0 || strings.Contains(out, "secret") || !strings.Contains(out, "a@example.com") {
		t.Fatalf("keypair info: %d %q", code, out)
	}
	if code, _, errOut = r.bai(t, "admin", "keypair", "info", "AKIA0000000000000000"); code == 0 || !strings.Contains(errOut, "no such keypair") {
		t.Fatalf("info of unknown: %d %q", code, errOut)
	}
	if code, _, errOut = r.bai(t, "admin", "keypair", "rm", kp.AccessKey); code != 0 {
		t.Fatalf("rm: %d %q", code, errOut)
	}

	// A second start keeps the admin keypair, in the file and in the KV.
	creds := r.srv.Credentials()
	r.stop()
	r = startServer(t, dir)
	if r.srv.Credentials() != creds {
		t.Fatal("credentials changed on restart")
	}
	resp, err := r.client(t).ListKeypairs(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Keypairs) != 1 || resp.Keypairs[0].AccessKey != creds.AccessKey || resp.Keypairs[0].Role != "admin" {
		t.Fatalf("keypairs after restart: %+v", resp.Keypairs)
	}
}

// TestConcurrentAdminOps checks the admin API under concurrent use.
func TestConcurrentKeypairAdds(t *testing.T) {
	r := startServer(t, t.TempDir())
	cl := r.client(t)
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for range 20 {
		wg.Go(func() {
			if _, err := cl.AddKeypair(context.Background(), events.KeypairAddRequest{}); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	resp, err := cl.ListKeypairs(context.Background())
	if err != nil || len(resp.Keypairs) != 21 {
		t.Fatalf("%v %d", err, len(resp.Keypairs))
	}
}

func TestQuotasHoldUnderConcurrentCreates(t *testing.T) {
	r := startServer(t, t.TempDir())
	admin := r.client(t)
	ctx := context.Background()
	if _, err := admin.AddPolicy(ctx, events.PolicyInfo{Name: "five", MaxConcurrentSessions: 5}); err != nil {
		t.Fatal(err)
	}
	tn := r.newTenant(t, "user", "five")
	cl := r.clientAs(t, tn)
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		ok       int
		refusals []error
	)
	for range 50 {
		wg.Go(func() {
			_, err := cl.Create(ctx, events.CreateRequest{Image: "python", Slots: []string{"cpu=0.1", "mem=64m"}})
			mu.Lock()
			defer mu.Unlock()
			if err == nil {
				ok++
			} else {
				refusals = append(refusals, err)
			}
		})
	}
	wg.Wait()
	if ok != 5 || len(refusals) != 45 {
		t.Fatalf("%d admitted, %d refused (want 5 and 45): %v", ok, len(refusals), refusals)
	}
	for _, err := range refusals {
		if !errors.Is(err, events.ErrQuota) || err.Error() != "You cannot run more than 5 concurrent sessions" {
			t.Fatalf("refusal: %v", err)
		}
	}
	list, err := cl.List(ctx, events.ListRequest{Statuses: events.AllStatuses, Limit: 100})
	if err != nil || list.Total != 5 {
		t.Fatalf("sessions: %v %+v", err, list)
	}
	// The CLI shows the message as it is.
	code, _, errOut := r.baiAs(t, tn, "start", "python")
	if code == 0 || errOut != "bai: You cannot run more than 5 concurrent sessions\n" {
		t.Fatalf("start over the limit: %d %q", code, errOut)
	}
	// Ending one frees a place.
	if _, err := cl.Terminate(ctx, list.Sessions[0].ID); err != nil {
		t.Fatal(err)
	}
	natstest.CheckFor(t, 20*time.Second, 20*time.Millisecond, func() error {
		_, err := cl.Create(ctx, events.CreateRequest{Image: "python", Slots: []string{"cpu=0.1", "mem=64m"}})
		return err
	})
}

func TestSlotQuota(t *testing.T) {
	r := startServer(t, t.TempDir())
	admin := r.client(t)
	ctx := context.Background()
	if _, err := admin.AddPolicy(ctx, events.PolicyInfo{Name: "two-cpu", TotalSlots: map[string]string{"cpu": "2"}}); err != nil {
		t.Fatal(err)
	}
	cl := r.clientAs(t, r.newTenant(t, "user", "two-cpu"))
	for i := range 2 {
		if _, err := cl.Create(ctx, events.CreateRequest{Image: "python", Slots: []string{"cpu=1", "mem=64m"}}); err != nil {
			t.Fatalf("create %d: %v", i, err)
		}
	}
	_, err := cl.Create(ctx, events.CreateRequest{Image: "python", Slots: []string{"cpu=0.5"}})
	if !errors.Is(err, events.ErrQuota) || !strings.Contains(err.Error(), `exceeds the total resource slots of your policy "two-cpu": cpu 2 in use + 0.5 requested > 2`) {
		t.Fatalf("over the slot limit: %v", err)
	}
	if list, err := cl.List(ctx, events.ListRequest{Statuses: events.AllStatuses}); err != nil || list.Total != 2 {
		t.Fatalf("sessions: %v %+v", err, list)
	}
}

func TestAgentIdentity(t *testing.T) {
	var logs natstest.SyncBuffer
	r := startServerWith(t, Config{AgentCapacity: map[string]string{"cpu": "4", "mem": "4g"},
		Log: zerolog.New(&logs).Level(zerolog.InfoLevel)})
	b := r.newTenant(t, "user", "")
	id := r.startSleeper(t, b)
	info, err := r.clientAs(t, b).Get(context.Background(), id)
	if err != nil || info.AgentID == "" {
		t.Fatalf("%v %+v", err, info)
	}
	// Everything so far ran within the agent's permissions.
	if strings.Contains(logs.String(), "nats_error") {
		t.Fatalf("a service hit a NATS error:\n%s", logs.String())
	}

	rc, agentID := r.rawAgent(t)
	if agentID != info.AgentID {
		t.Fatalf("agent user scoped to %q, session placed on %q", agentID, info.AgentID)
	}
	// It reads no other agent's work, no session log, no replies of others.
	for _, subj := range []string{events.AllSessionsFilter, "bai.session.*.*.*.agent-other", "bai.work.>", "bai.work.agent-other", "_INBOX.>", "$KV.>"} {
		if _, err := rc.nc.SubscribeSync(subj); err != nil {
			t.Fatal(err)
		}
		rc.denied(t, "agent subscribe", subj)
	}
	// It addresses no work to another agent, writes no other heartbeat or
	// keypair, and deletes nothing.
	work, _ := events.AgentWorkSubject(b.ak, id, events.EventScheduled, "agent-other")
	ledger, _ := events.AgentLedgerSubject(agentID)
	for _, subj := range []string{
		work, "$KV.bai_agents.agent-other", "$KV.bai_keypairs.ak." + b.ak,
		"$JS.API.STREAM.DELETE.BAI_SESSIONS", "$JS.API.STREAM.PURGE.BAI_SESSIONS",
		"$JS.API.CONSUMER.CREATE.BAI_WORK.bai-agent-agent-other", "bai.api." + b.ak + ".session.terminate",
		"$JS.API.CONSUMER.CREATE.BAI_WORK.bai-agent-agent-other.bai.work.agent-other",
		"$JS.API.CONSUMER.CREATE.BAI_WORK.bai-agent-" + agentID, // body could name any filter
		"$JS.API.CONSUMER.CREATE.BAI_WORK.bai-agent-" + agentID + ".bai.work.>",
		"$JS.API.CONSUMER.CREATE.BAI_WORK.bai-agent-" + agentID + ".bai.work.agent-other",
		"$JS.API.CONSUMER.DURABLE.CREATE.BAI_WORK.bai-agent-" + agentID,
		"$JS.API.CONSUMER.DELETE.BAI_WORK.bai-agent-agent-other",
		"$JS.API.CONSUMER.CREATE.BAI_SESSIONS.bai-agent-" + agentID + ".bai.session.>",
		"$JS.API.STREAM.DELETE.BAI_WORK", "$JS.API.STREAM.PURGE.BAI_WORK",
		ledger, // the scheduler's placement guard
	} {
		if err := rc.nc.Publish(subj, []byte("{}")); err != nil {
			t.Fatal(err)
		}
		rc.denied(t, "agent publish", subj)
	}

	// Its own heartbeat key claiming another agent's id: ignored.
	fake, _ := json.Marshal(events.AgentInfo{V: events.Version, ID: "agent-other", Capacity: map[string]string{"cpu": "1000"}})
	if err := rc.nc.Publish("$KV.bai_agents."+agentID, fake); err != nil {
		t.Fatal(err)
	}
	natstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if !strings.Contains(logs.String(), "bad_agent_heartbeat") {
			return errors.New("not refused yet")
		}
		return nil
	})

	// An event for this kernel claiming another agent: refused and logged
	// by the scheduler and the registry; the session stays running.
	js, err := jetstream.New(rc.nc)
	if err != nil {
		t.Fatal(err)
	}
	forged := &events.Event{V: events.Version, ID: "forged-1", Name: events.EventTerminated, Time: time.Now().UTC(),
		AccessKey: b.ak, SessionID: id, KernelID: info.MainKernelID, AgentID: "agent-other"}
	subj, _ := events.EventSubject(forged)
	data, _ := json.Marshal(forged)
	if _, err := js.Publish(context.Background(), subj, data); err != nil {
		t.Fatal(err)
	}
	natstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if n := strings.Count(logs.String(), "event_from_wrong_agent_refused"); n < 2 {
			return fmt.Errorf("%d refusals logged", n)
		}
		return nil
	})
	after, err := r.clientAs(t, b).Get(context.Background(), id)
	if err != nil || after.Status != events.StatusRunning {
		t.Fatalf("after the forged event: %v %+v", err, after)
	}
	// The real agent still ends it.
	if _, err := r.clientAs(t, b).Terminate(context.Background(), id); err != nil {
		t.Fatal(err)
	}
	cl := r.clientAs(t, b)
	natstest.CheckFor(t, 20*time.Second, 10*time.Millisecond, func() error {
		info, err := cl.Get(context.Background(), id)
		if err != nil || info.Status != events.StatusTerminated {
			return fmt.Errorf("%v %+v", err, info)
		}
		return nil
	})
}

func TestAdminListsAnotherKey(t *testing.T) {
	r := startServer(t, t.TempDir())
	a, b := r.newTenant(t, "user", ""), r.newTenant(t, "user", "")
	id := r.startSleeper(t, b)
	code, out, errOut := r.bai(t, "ps", "--access-key", b.ak, "--name-only")
	info, err := r.clientAs(t, b).Get(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	if code != 0 || strings.TrimSpace(out) != info.Name {
		t.Fatalf("admin ps --access-key B: %d %q %q", code, out, errOut)
	}
	code, out, errOut = r.baiAs(t, a, "ps", "--access-key", b.ak)
	if code == 0 || strings.Contains(out, id) || !strings.Contains(errOut, "only an admin may see another key's sessions") {
		t.Fatalf("A ps --access-key B: %d %q %q", code, out, errOut)
	}
	if code, _, errOut = r.baiAs(t, a, "ps", "--access-key", "AKIA.>"); code != cli.ExitInvalid {
		t.Fatalf("A ps --access-key with a wildcard: %d %q", code, errOut)
	}
	if code, out, _ = r.baiAs(t, a, "ps", "--access-key", a.ak); code != 0 || !strings.Contains(out, "no matching sessions") {
		t.Fatalf("A ps --access-key A: %d %q", code, out)
	}
}

// TestAdminActsOnAnotherKey: with --access-key an admin reads another
// key's session (info, logs, events) and terminates it; a user doing the
// same is refused and nothing changes.
func TestAdminActsOnAnotherKey(t *testing.T) {
	r := startServer(t, t.TempDir())
	a, b := r.newTenant(t, "user", ""), r.newTenant(t, "user", "")
	bcl := r.clientAs(t, b)
	code, out, errOut := r.baiAs(t, b, "run", "--name", "b-sess", "-c", "print('hello from B')", "python")
	if code != 0 || !strings.Contains(out, "hello from B") {
		t.Fatalf("B run: %d %q %q", code, out, errOut)
	}
	binfo, err := bcl.Get(context.Background(), "b-sess")
	if err != nil || binfo.Status != events.StatusRunning {
		t.Fatalf("B's session: %v %+v", err, binfo)
	}
	id := binfo.ID

	// A user naming B's key: refused, whatever the command.
	for _, args := range [][]string{
		{"info", "--access-key", b.ak, id},
		{"logs", "--access-key", b.ak, id},
		{"events", "--access-key", b.ak, id},
		{"rm", "--access-key", b.ak, id},
	} {
		code, out, errOut := r.baiAs(t, a, args...)
		if code == 0 || strings.Contains(out, id) || !strings.Contains(errOut, "not an admin") {
			t.Fatalf("A %v: %d %q %q", args, code, out, errOut)
		}
	}
	// Straight at the API too: the gateway refuses the terminate itself.
	if _, err := r.clientAs(t, a).TerminateFor(context.Background(), b.ak, id); !errors.Is(err, events.ErrForbidden) {
		t.Fatalf("A terminate B's session: %v", err)
	}
	if code, _, errOut := r.baiAs(t, a, "info", "--access-key", "AKIA.>", id); code != cli.ExitInvalid {
		t.Fatalf("A info --access-key with a wildcard: %d %q", code, errOut)
	}
	// Without --access-key, B's session is not A's, nor the admin's.
	if code, _, errOut := r.bai(t, "info", id); code == 0 || !strings.Contains(errOut, "not found") {
		t.Fatalf("admin info without --access-key: %d %q", code, errOut)
	}
	if info, err := bcl.Get(context.Background(), id); err != nil || info.Status != events.StatusRunning {
		t.Fatalf("after the refusals: %v %+v", err, info)
	}

	// The admin naming B's key.
	code, out, errOut = r.bai(t, "--output", "json", "info", "--access-key", b.ak, id)
	var info events.SessionInfo
	if code != 0 || json.Unmarshal([]byte(out), &info) != nil || info.ID != id || info.AccessKey != b.ak {
		t.Fatalf("admin info: %d %q %q", code, out, errOut)
	}
	if code, out, errOut = r.bai(t, "logs", "--access-key", b.ak, id); code != 0 || !strings.Contains(out, "hello from B") {
		t.Fatalf("admin logs: %d %q %q", code, out, errOut)
	}
	if code, out, errOut = r.bai(t, "events", "--access-key", b.ak, "--wait", string(events.EventStarted), id); code != 0 || !strings.Contains(out, string(events.EventStarted)) {
		t.Fatalf("admin events: %d %q %q", code, out, errOut)
	}
	if code, out, errOut = r.bai(t, "rm", "--access-key", b.ak, id); code != 0 || !strings.Contains(out, "terminating") {
		t.Fatalf("admin rm: %d %q %q", code, out, errOut)
	}
	natstest.CheckFor(t, 20*time.Second, 20*time.Millisecond, func() error {
		info, err := bcl.Get(context.Background(), id)
		if err != nil || info.Status != events.StatusTerminated || info.StatusInfo != string(events.ReasonUserRequested) {
			return fmt.Errorf("%v %+v", err, info)
		}
		return nil
	})
	// events on the ended session prints its history and stops.
	if code, out, errOut = r.bai(t, "events", "--access-key", b.ak, id); code != 0 || !strings.Contains(out, string(events.EventTerminated)) {
		t.Fatalf("admin events after the end: %d %q %q", code, out, errOut)
	}
}

// TestPolicyIdleTimeoutAndLifetime: a key's resource policy sets its
// sessions' idle timeout (the server has none) and max session lifetime,
// which ends a running session even while it runs code.
func TestPolicyIdleTimeoutAndLifetime(t *testing.T) {
	r := startServerWith(t, Config{AgentCapacity: map[string]string{"cpu": "4", "mem": "4g"}, IdleTimeout: -1})
	ctx := context.Background()
	admin := r.client(t)
	if _, err := admin.AddPolicy(ctx, events.PolicyInfo{Name: "idle-2s", IdleTimeout: 2}); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.AddPolicy(ctx, events.PolicyInfo{Name: "life-3s", MaxSessionLifetime: 3}); err != nil {
		t.Fatal(err)
	}
	idler, lived, plain := r.newTenant(t, "user", "idle-2s"), r.newTenant(t, "user", "life-3s"), r.newTenant(t, "user", "")
	idleID, livedID, plainID := r.startSleeper(t, idler), r.startSleeper(t, lived), r.startSleeper(t, plain)
	// The long-lived session is busy: a run that outlasts its lifetime.
	if _, err := r.clientAs(t, lived).Execute(ctx, events.ExecuteRequest{SessionID: livedID,
		Run: events.RunSpec{ID: "busy", Code: "import time\ntime.sleep(120)"}}); err != nil {
		t.Fatal(err)
	}
	ended := func(tn tenant, id string, reason events.Reason) {
		t.Helper()
		cl := r.clientAs(t, tn)
		natstest.CheckFor(t, 30*time.Second, 50*time.Millisecond, func() error {
			info, err := cl.Get(ctx, id)
			if err != nil || info.Status != events.StatusTerminated || info.StatusInfo != string(reason) {
				return fmt.Errorf("%v %+v", err, info)
			}
			return nil
		})
	}
	ended(idler, idleID, events.ReasonIdleTimeout)
	ended(lived, livedID, events.ReasonMaxLifetime)
	// The key without a policy keeps the server's default: no idle
	// timeout; its session has run longer than the other key's.
	info, err := r.clientAs(t, plain).Get(ctx, plainID)
	if err != nil || info.Status != events.StatusRunning {
		t.Fatalf("session of the key without a policy: %v %+v", err, info)
	}
	hist, err := r.clientAs(t, lived).History(ctx, livedID)
	if err != nil {
		t.Fatal(err)
	}
	var msg string
	for _, ev := range hist.Events {
		if ev.Name == events.EventTerminateRequest {
			msg = ev.Message
		}
	}
	if !strings.Contains(msg, "max session lifetime of 3s") {
		t.Fatalf("terminate request message %q", msg)
	}
}

// followedSleeper starts a server, a tenant and a running session of it,
// and follows the session as the tenant does (bai events, bai run).
func followedSleeper(t *testing.T) (*running, tenant, string, *client.Client, *client.Watcher) {
	t.Helper()
	r := startServer(t, t.TempDir())
	b := r.newTenant(t, "user", "")
	id := r.startSleeper(t, b)
	cl := r.clientAs(t, b)
	w, err := cl.Watch(context.Background(), "", id)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Close)
	return r, b, id, cl, w
}

// TestFollowersSeeOnlyWhatTheLogStored: bai events and bai run follow the
// live copies of the log and of the output, so an event the log refuses
// (here an agent's event conditioned on a sequence the session is past)
// never reaches them, nor an output chunk sent again with its id (after a
// lost acknowledgement); what the streams store does, once.
func TestFollowersSeeOnlyWhatTheLogStored(t *testing.T) {
	r, b, id, cl, w := followedSleeper(t)
	rc, agentID := r.rawAgent(t)
	info, err := cl.Get(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	refused := events.Event{V: events.Version, ID: "refused-" + id, Name: events.EventPullProgress, Time: time.Now().UTC(),
		AccessKey: b.ak, SessionID: id, KernelID: info.MainKernelID, AgentID: agentID, Message: "never stored"}
	subj, _ := events.EventSubject(&refused)
	filter, _ := events.SessionFilter(b.ak, id)
	data, _ := json.Marshal(&refused)
	m := nats.NewMsg(subj)
	m.Data = data
	m.Header.Set(jetstream.ExpectedLastSubjSeqHeader, "1")
	m.Header.Set("Nats-Expected-Last-Subject-Sequence-Subject", filter)
	reply, err := rc.nc.RequestMsg(m, 5*time.Second)
	if err != nil || !strings.Contains(string(reply.Data), "wrong last sequence") {
		t.Fatalf("the log took it: %v %s", err, reply.Data)
	}
	outSubj, _ := events.OutputSubject(b.ak, id, "r1")
	for _, c := range []struct{ stream, data, id string }{
		{events.StreamStdout, "once\n", "chunk-1"}, {events.StreamStdout, "once\n", "chunk-1"}, {events.StreamExit, "0", "exit-1"},
	} {
		m := &nats.Msg{Subject: outSubj, Data: []byte(c.data), Header: nats.Header{events.HeaderStream: {c.stream}, jetstream.MsgIDHeader: {c.id}}}
		if _, err := rc.nc.RequestMsg(m, 5*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	if code, out, errOut := r.baiAs(t, b, "rm", id); code != 0 {
		t.Fatalf("rm: %d %q %q", code, out, errOut)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var stdout string
	for {
		it, err := w.Next(ctx)
		if err != nil {
			t.Fatalf("follow until terminated: %v", err)
		}
		if it.Output != nil && it.Output.Stream == events.StreamStdout {
			stdout += string(it.Output.Data)
		}
		if it.Event == nil {
			continue
		}
		if it.Event.ID == refused.ID {
			t.Fatalf("a follower got the event the log refused")
		}
		if it.Event.Name == events.EventTerminated {
			break
		}
	}
	if stdout != "once\n" {
		t.Fatalf("a follower got output %q, want the chunk once", stdout)
	}
}

// TestFollowersGetOutputInTheOrderWritten: an output chunk the log stored
// after later ones (here the first: the agent sends a chunk again after a
// lost acknowledgement, once later ones are stored) reaches bai run's
// follower and bai logs in the order it was written.
func TestFollowersGetOutputInTheOrderWritten(t *testing.T) {
	r, b, id, _, w := followedSleeper(t)
	w.FromStart("r1")
	rc, _ := r.rawAgent(t)
	outSubj, _ := events.OutputSubject(b.ak, id, "r1")
	for _, c := range []struct{ stream, data, n string }{
		{events.StreamStdout, "b", "2"}, {events.StreamStderr, "E", "1"}, {events.StreamStdout, "c", "3"},
		{events.StreamStdout, "a", "1"}, {events.StreamExit, "0", ""},
	} {
		m := &nats.Msg{Subject: outSubj, Data: []byte(c.data), Header: nats.Header{events.HeaderStream: {c.stream}}}
		if c.n != "" {
			m.Header.Set(events.HeaderChunk, c.n)
		}
		if _, err := rc.nc.RequestMsg(m, 5*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var got []string
	for {
		it, err := w.Next(ctx)
		if err != nil {
			t.Fatalf("follow until the exit: %v (so far %v)", err, got)
		}
		if it.Output == nil {
			continue
		}
		got = append(got, it.Output.Stream+":"+string(it.Output.Data))
		if it.Output.Stream == events.StreamExit {
			break
		}
	}
	if want := []string{"stderr:E", "stdout:a", "stdout:b", "stdout:c", "exit:"}; !slices.Equal(got, want) {
		t.Fatalf("follower got %v, want %v", got, want)
	}
	if code, out, errOut := r.baiAs(t, b, "logs", id); code != 0 || out != "abc" || errOut != "E" {
		t.Fatalf("bai logs: %d %q %q, want stdout abc, stderr E", code, out, errOut)
	}
}
