package gateway

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestBootstrapAdmin: the first call makes an admin keypair and its 0600
// file; a second keeps both; a file whose keypair the bucket lost is
// stored again; a file without a keypair is refused and changes nothing.
func TestBootstrapAdmin(t *testing.T) {
	keys, kv := openKeys(t)
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "admin", "credentials.env")
	ak, created, err := keys.BootstrapAdmin(ctx, path, "nats://n1:4222,nats://n2:4222")
	if err != nil || !created {
		t.Fatalf("first bootstrap: %v created=%v", err, created)
	}
	kp, _, err := keys.Get(ctx, ak)
	if err != nil || !kp.IsAdmin() {
		t.Fatalf("keypair %s: %+v %v, want an admin", ak, kp, err)
	}
	st, err := os.Stat(path)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("file: %v %v", st, err)
	}
	data, _ := os.ReadFile(path)
	sk := string(skWord.FindSubmatch(data)[1])
	if !strings.Contains(string(data), "BAI_NATS_URL='nats://n1:4222,nats://n2:4222'") || !kp.checkSecret(sk) {
		t.Fatalf("file %q does not hold the keypair and URL", data)
	}
	e, _ := kv.Get(ctx, "ak."+ak)
	again, created, err := keys.BootstrapAdmin(ctx, path, "other")
	if err != nil || created || again != ak {
		t.Fatalf("second bootstrap: %s %v %v", again, created, err)
	}
	if e2, _ := kv.Get(ctx, "ak."+ak); e2.Revision() != e.Revision() {
		t.Fatal("a second bootstrap rewrote the keypair")
	}
	if data2, _ := os.ReadFile(path); string(data2) != string(data) {
		t.Fatal("a second bootstrap rewrote the file")
	}
	if err := keys.Delete(ctx, ak); err != nil {
		t.Fatal(err)
	}
	if _, _, err := keys.BootstrapAdmin(ctx, path, ""); err != nil {
		t.Fatal(err)
	}
	if kp, _, err := keys.Get(ctx, ak); err != nil || !kp.IsAdmin() || !kp.checkSecret(sk) {
		t.Fatalf("after the bucket lost it: %+v %v", kp, err)
	}

	bad := filepath.Join(t.TempDir(), "bad.env")
	if err := os.WriteFile(bad, []byte("BAI_ACCESS_KEY=short\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	before, _ := kv.Keys(ctx)
	if _, _, err := keys.BootstrapAdmin(ctx, bad, ""); err == nil || !strings.Contains(err.Error(), "remove the file") {
		t.Fatalf("a file without a keypair: %v", err)
	}
	if after, _ := kv.Keys(ctx); len(after) != len(before) {
		t.Fatal("a refused bootstrap stored a keypair")
	}
	if _, _, err := keys.BootstrapAdmin(ctx, filepath.Join(t.TempDir(), "x"), "nats://a'b"); err == nil {
		t.Fatal("a URL with a quote was written")
	}
}
