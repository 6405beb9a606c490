package gateway

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/bai-sh/bai/internal/natstest"
	"github.com/bai-sh/bai/pkg/events"
)

func openKeys(t testing.TB) (*Keys, jetstream.KeyValue) {
	t.Helper()
	nc := natstest.Connect(t, natstest.RunServer(t))
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	keys, err := OpenKeys(context.Background(), js, 1)
	if err != nil {
		t.Fatal(err)
	}
	kv, err := js.KeyValue(context.Background(), KeypairsBucket)
	if err != nil {
		t.Fatal(err)
	}
	return keys, kv
}

func TestKeypairSecretsAreHashedAndChecked(t *testing.T) {
	keys, kv := openKeys(t)
	ctx := context.Background()
	kp, secret, err := keys.Add(ctx, NewKeypair{Email: "a@example.com", Groups: []string{"ml"}})
	if err != nil {
		t.Fatal(err)
	}
	if !validAccessKey(kp.AccessKey) || len(secret) != SecretKeyLen || kp.Role != RoleUser || kp.Policy != DefaultPolicy {
		t.Fatalf("keypair %+v secret %q", kp, secret)
	}
	raw, err := kv.Get(ctx, "ak."+kp.AccessKey)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(raw.Value(), []byte(secret)) {
		t.Fatal("the secret is stored in the clear")
	}
	if got, err := keys.Verify(ctx, kp.AccessKey, secret); err != nil || got.Email != "a@example.com" {
		t.Fatalf("verify: %v %+v", err, got)
	}
	for name, c := range map[string][2]string{
		"wrong secret": {kp.AccessKey, strings.Repeat("a", 40)},
		"empty secret": {kp.AccessKey, ""},
		"unknown key":  {"AKIA0000000000000000", secret},
		"empty key":    {"", secret},
		"wildcard key": {"AKIA>", secret},
	} {
		if _, err := keys.Verify(ctx, c[0], c[1]); !errors.Is(err, ErrBadCredentials) {
			t.Errorf("%s: %v", name, err)
		}
	}
	// Two keypairs with one secret have different hashes (per-key salt).
	other, _, err := keys.Add(ctx, NewKeypair{SecretKey: secret})
	if err != nil {
		t.Fatal(err)
	}
	k1, _, _ := keys.Get(ctx, kp.AccessKey)
	k2, _, _ := keys.Get(ctx, other.AccessKey)
	if k1.SecretHash == k2.SecretHash {
		t.Fatal("same hash for the same secret under two keys")
	}

	newSecret, err := keys.Rotate(ctx, kp.AccessKey)
	if err != nil || newSecret == secret {
		t.Fatalf("rotate: %v", err)
	}
	if _, err := keys.Verify(ctx, kp.AccessKey, secret); !errors.Is(err, ErrBadCredentials) {
		t.Fatalf("old secret after rotate: %v", err)
	}
	if _, err := keys.Verify(ctx, kp.AccessKey, newSecret); err != nil {
		t.Fatalf("new secret: %v", err)
	}
	if err := keys.Delete(ctx, kp.AccessKey); err != nil {
		t.Fatal(err)
	}
	if _, err := keys.Verify(ctx, kp.AccessKey, newSecret); !errors.Is(err, ErrBadCredentials) {
		t.Fatalf("deleted key: %v", err)
	}
	if err := keys.Delete(ctx, kp.AccessKey); !errors.Is(err, ErrNoKeypair) {
		t.Fatalf("delete twice: %v", err)
	}
}

func TestKeypairBadInputChangesNothing(t *testing.T) {
	keys, _ := openKeys(t)
	ctx := context.Background()
	for name, n := range map[string]NewKeypair{
		"bad access key": {AccessKey: "AKIA.*"},
		"short secret":   {SecretKey: "x"},
		"bad role":       {Role: "root"},
		"bad user id":    {UserID: "a b"},
		"bad email":      {Email: "a\nb"},
		"bad domain":     {Domain: "a.b"},
		"bad group":      {Groups: []string{">"}},
		"unknown policy": {Policy: "gold"},
	} {
		if _, _, err := keys.Add(ctx, n); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if l, err := keys.List(ctx); err != nil || len(l) != 0 {
		t.Fatalf("stored: %v %+v", err, l)
	}
	kp, _, err := keys.Add(ctx, NewKeypair{})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := keys.Add(ctx, NewKeypair{AccessKey: kp.AccessKey}); err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Fatalf("duplicate: %v", err)
	}
	for name, p := range map[string]Policy{
		"bad name":       {Name: "a.b"},
		"negative limit": {Name: "p", MaxConcurrentSessions: -1},
		"bad slots":      {Name: "p", TotalSlots: map[string]string{"cpu": "lots"}},
	} {
		if err := keys.PutPolicy(ctx, p, true); err == nil {
			t.Errorf("policy %s: accepted", name)
		}
	}
	if err := keys.PutPolicy(ctx, Policy{Name: "nope", MaxConcurrentSessions: 1}, false); !errors.Is(err, ErrNoPolicy) {
		t.Fatalf("set of unknown policy: %v", err)
	}
	if err := keys.PutPolicy(ctx, Policy{Name: DefaultPolicy}, true); err == nil {
		t.Fatal("default policy added twice")
	}
	ps, err := keys.ListPolicies(ctx)
	if err != nil || len(ps) != 1 || ps[0].Name != DefaultPolicy {
		t.Fatalf("policies: %v %+v", err, ps)
	}
}

func TestEnsureAdminKeepsAndRepairs(t *testing.T) {
	keys, kv := openKeys(t)
	ctx := context.Background()
	ak, sk := NewAccessKey(), NewSecretKey()
	for range 2 {
		if err := keys.EnsureAdmin(ctx, ak, sk); err != nil {
			t.Fatal(err)
		}
	}
	e, err := kv.Get(ctx, "ak."+ak)
	if err != nil || e.Revision() == 0 {
		t.Fatal(err)
	}
	rev := e.Revision()
	if err := keys.EnsureAdmin(ctx, ak, sk); err != nil {
		t.Fatal(err)
	}
	if e, _ := kv.Get(ctx, "ak."+ak); e.Revision() != rev {
		t.Fatal("a second start rewrote the admin keypair")
	}
	kp, err := keys.Verify(ctx, ak, sk)
	if err != nil || !kp.IsAdmin() {
		t.Fatalf("admin: %v %+v", err, kp)
	}
}

func TestPermissions(t *testing.T) {
	ak := "AKIAAAAAAAAAAAAAAAAA"
	u := Permissions(ak, false)
	if got := strings.Join(u.Pub.Allow, " "); got != "bai.api."+ak+".>" {
		t.Fatalf("user publish %q", got)
	}
	if got := strings.Join(u.Sub.Allow, " "); got != "bai.live.session."+ak+".> bai.live.out."+ak+".> "+events.InboxPrefix(ak)+".>" {
		t.Fatalf("user subscribe %q", got)
	}
	a := Permissions(ak, true)
	if got := strings.Join(a.Pub.Allow, " "); got != "bai.api."+ak+".>" {
		t.Fatalf("admin publish %q", got)
	}
	if got := strings.Join(a.Sub.Allow, " "); got != "bai.live.session.> bai.live.out.> "+events.InboxPrefix(ak)+".>" {
		t.Fatalf("admin subscribe %q", got)
	}
}

func TestWatchReportsRevocationsNotAdds(t *testing.T) {
	keys, _ := openKeys(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	old, _, err := keys.Add(ctx, NewKeypair{})
	if err != nil {
		t.Fatal(err)
	}
	rotatedBefore, _, err := keys.Add(ctx, NewKeypair{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := keys.Rotate(ctx, rotatedBefore.AccessKey); err != nil {
		t.Fatal(err)
	}
	got := make(chan string, 16)
	if err := keys.Watch(ctx, func(ak string) { got <- ak }); err != nil {
		t.Fatal(err)
	}
	next := func(want, what string) {
		t.Helper()
		select {
		case ak := <-got:
			if ak != want {
				t.Fatalf("change %s, want the %s %s", ak, what, want)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("the %s %s not reported", what, want)
		}
	}
	added, _, err := keys.Add(ctx, NewKeypair{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := keys.Rotate(ctx, old.AccessKey); err != nil {
		t.Fatal(err)
	}
	next(old.AccessKey, "rotated")
	if err := keys.Delete(ctx, added.AccessKey); err != nil {
		t.Fatal(err)
	}
	next(added.AccessKey, "deleted")
	// A key made admin (the server's repair of its admin keypair at start).
	user, _, err := keys.Add(ctx, NewKeypair{})
	if err != nil {
		t.Fatal(err)
	}
	if err := keys.EnsureAdmin(ctx, user.AccessKey, NewSecretKey()); err != nil {
		t.Fatal(err)
	}
	next(user.AccessKey, "promoted")
	select {
	case ak := <-got:
		t.Fatalf("%s reported besides", ak)
	default:
	}
}
