package gateway

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"sort"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/bai-sh/bai/pkg/events"
	"github.com/bai-sh/bai/pkg/events/streams"
	"github.com/bai-sh/bai/pkg/slots"
)

// KeypairsBucket is the JetStream KV bucket of keypairs and resource
// policies: "ak.<access key>" holds a Keypair, "policy.<name>" a Policy.
const KeypairsBucket = streams.Keypairs

// DefaultPolicy is the policy a keypair gets when none is named; it is
// created with the bucket and has no limits.
const DefaultPolicy = "default"

// Roles of a keypair.
const (
	RoleUser  = "user"
	RoleAdmin = "admin"
)

// Lengths of generated keys.
const (
	AccessKeyLen = 20 // "AKIA" + 16
	SecretKeyLen = 40
)

const (
	accessKeyAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
	secretAlphabet    = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
)

// Errors of the keypair store.
var (
	// ErrBadCredentials: unknown access key or wrong secret. One error for
	// both, so that a caller cannot probe which keys exist.
	ErrBadCredentials = errors.New("unknown access key or wrong secret key")
	// ErrNoKeypair: no such keypair.
	ErrNoKeypair = errors.New("no such keypair")
	// ErrNoPolicy: no such policy.
	ErrNoPolicy = errors.New("no such resource policy")
	// ErrExists: the keypair or policy to create exists already.
	ErrExists = errors.New("already exists")
	// ErrBadField: a field of a keypair or policy is not valid.
	ErrBadField = errors.New("invalid keypair or policy field")
)

// keysError is an error of the keypair store in its own words that
// errors.Is matches to its kind (ErrExists, ErrBadField).
type keysError struct {
	kind error
	msg  string
}

func (e *keysError) Error() string        { return e.msg }
func (e *keysError) Is(target error) bool { return target == e.kind }

func badField(format string, args ...any) error {
	return &keysError{kind: ErrBadField, msg: fmt.Sprintf(format, args...)}
}

func exists(format string, args ...any) error {
	return &keysError{kind: ErrExists, msg: fmt.Sprintf(format, args...)}
}

// Keypair is one access key: its hashed secret, the user it belongs to,
// and what it may do. The secret itself is never stored: SecretHash is
// HMAC-SHA256 keyed by Salt (a random 32 bytes per keypair). The secret is
// 40 random characters (238 bits), so a fast keyed hash is the right
// choice; a slow KDF would add nothing but cost to every connection.
type Keypair struct {
	AccessKey  string    `json:"access_key"`
	SecretHash string    `json:"secret_hash"`
	Salt       string    `json:"salt"`
	UserID     string    `json:"user_id"`
	Email      string    `json:"email,omitempty"`
	Domain     string    `json:"domain"`
	Groups     []string  `json:"groups,omitempty"`
	Role       string    `json:"role"`
	Policy     string    `json:"policy"`
	CreatedAt  time.Time `json:"created_at"`
	RotatedAt  time.Time `json:"rotated_at,omitzero"`
}

// IsAdmin reports whether the keypair has the admin role.
func (k *Keypair) IsAdmin() bool { return k.Role == RoleAdmin }

// Public is k without its hash and salt, as the admin API shows it.
func (k Keypair) Public() Keypair {
	k.SecretHash, k.Salt = "", ""
	return k
}

// Policy is a resource policy (events.PolicyInfo). A zero limit means no
// limit. MaxConcurrentSessions bounds the unfinished sessions of a key
// (pending ones included), MaxPendingSessions those still waiting for an
// agent, TotalSlots the sum of the slots its unfinished sessions occupy.
// IdleTimeout and MaxSessionLifetime are recorded for the agent and the
// scheduler to enforce.
type Policy = events.PolicyInfo

// validatePolicy checks a policy's fields.
func validatePolicy(p *Policy) error {
	if !events.ValidToken(p.Name) {
		return badField("invalid policy name %q: use 1-64 letters, digits, '-' or '_'", clip(p.Name))
	}
	if p.MaxConcurrentSessions < 0 || p.MaxPendingSessions < 0 || p.IdleTimeout < 0 || p.MaxSessionLifetime < 0 {
		return badField("policy limits must not be negative")
	}
	if _, err := slots.ParseMap(p.TotalSlots); err != nil {
		return badField("total resource slots: %v", err)
	}
	return nil
}

// NewAccessKey makes a random access key: AKIA and 16 more characters.
func NewAccessKey() string { return "AKIA" + randomString(accessKeyAlphabet, AccessKeyLen-4) }

// NewSecretKey makes a random 40-character secret.
func NewSecretKey() string { return randomString(secretAlphabet, SecretKeyLen) }

func randomString(alphabet string, n int) string {
	b := make([]byte, n)
	max := big.NewInt(int64(len(alphabet)))
	for i := range b {
		v, err := rand.Int(rand.Reader, max)
		if err != nil {
			panic(fmt.Sprintf("crypto/rand: %v", err)) // the kernel's RNG failing is not recoverable
		}
		b[i] = alphabet[v.Int64()]
	}
	return string(b)
}

// validAccessKey: AKIA and 16 upper-case letters or digits.
func validAccessKey(ak string) bool {
	if len(ak) != AccessKeyLen || !strings.HasPrefix(ak, "AKIA") {
		return false
	}
	for i := 4; i < len(ak); i++ {
		if !strings.ContainsRune(accessKeyAlphabet, rune(ak[i])) {
			return false
		}
	}
	return true
}

func hashSecret(salt []byte, secret string) string {
	m := hmac.New(sha256.New, salt)
	m.Write([]byte(secret))
	return hex.EncodeToString(m.Sum(nil))
}

// setSecret stores the keyed hash of secret in k with a fresh salt.
func (k *Keypair) setSecret(secret string) {
	var salt [32]byte
	_, _ = rand.Read(salt[:])
	k.Salt = hex.EncodeToString(salt[:])
	k.SecretHash = hashSecret(salt[:], secret)
}

// checkSecret compares secret with the stored hash in constant time.
func (k *Keypair) checkSecret(secret string) bool {
	salt, err := hex.DecodeString(k.Salt)
	if err != nil || len(salt) == 0 {
		return false
	}
	got := hashSecret(salt, secret)
	return subtle.ConstantTimeCompare([]byte(got), []byte(k.SecretHash)) == 1
}

// Keys is the keypair store on a JetStream KV bucket.
type Keys struct {
	kv jetstream.KeyValue
}

// OpenKeys creates (or opens) the keypairs bucket with the default policy.
func OpenKeys(ctx context.Context, js jetstream.JetStream, replicas int) (*Keys, error) {
	kv, err := streams.ProvisionBucket(ctx, js, jetstream.KeyValueConfig{
		Bucket:      KeypairsBucket,
		Description: "bai keypairs (hashed secrets) and resource policies",
		History:     1,
		Storage:     jetstream.FileStorage,
		Replicas:    replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("gateway: keypairs bucket: %w", err)
	}
	k := &Keys{kv: kv}
	if _, err := kv.Create(ctx, policyKey(DefaultPolicy), mustJSON(Policy{Name: DefaultPolicy})); err != nil && !errors.Is(err, jetstream.ErrKeyExists) {
		return nil, fmt.Errorf("gateway: default policy: %w", err)
	}
	return k, nil
}

func akKey(ak string) string       { return "ak." + ak }
func policyKey(name string) string { return "policy." + name }

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err) // only plain structs are marshalled here
	}
	return b
}

// Get returns the keypair of ak and its KV revision.
func (k *Keys) Get(ctx context.Context, ak string) (*Keypair, uint64, error) {
	if !events.ValidToken(ak) {
		return nil, 0, ErrNoKeypair
	}
	e, err := k.kv.Get(ctx, akKey(ak))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, 0, ErrNoKeypair
	}
	if err != nil {
		return nil, 0, err
	}
	var kp Keypair
	if err := json.Unmarshal(e.Value(), &kp); err != nil {
		return nil, 0, fmt.Errorf("keypair %s: %w", ak, err)
	}
	return &kp, e.Revision(), nil
}

// Verify returns the keypair of ak when secret is its secret, else
// ErrBadCredentials.
func (k *Keys) Verify(ctx context.Context, ak, secret string) (*Keypair, error) {
	if !validAccessKey(ak) || len(secret) != SecretKeyLen {
		return nil, ErrBadCredentials
	}
	kp, _, err := k.Get(ctx, ak)
	if errors.Is(err, ErrNoKeypair) {
		return nil, ErrBadCredentials
	}
	if err != nil {
		return nil, err
	}
	if !kp.checkSecret(secret) {
		return nil, ErrBadCredentials
	}
	return kp, nil
}

// NewKeypair describes a keypair to add.
type NewKeypair struct {
	// AccessKey and SecretKey: empty makes random ones (the admin
	// keypair of bai-server passes its own).
	AccessKey, SecretKey string
	UserID, Email        string
	Domain               string
	Groups               []string
	Role                 string
	Policy               string
}

// Add stores a new keypair and returns it with its secret (the only time
// the secret is seen).
func (k *Keys) Add(ctx context.Context, n NewKeypair) (*Keypair, string, error) {
	if n.AccessKey == "" {
		n.AccessKey = NewAccessKey()
	}
	if n.SecretKey == "" {
		n.SecretKey = NewSecretKey()
	}
	if n.Role == "" {
		n.Role = RoleUser
	}
	if n.Policy == "" {
		n.Policy = DefaultPolicy
	}
	if n.Domain == "" {
		n.Domain = "default"
	}
	switch {
	case !validAccessKey(n.AccessKey):
		return nil, "", badField("invalid access key %q: AKIA and 16 upper-case letters or digits", clip(n.AccessKey))
	case len(n.SecretKey) != SecretKeyLen:
		return nil, "", badField("invalid secret key: %d characters needed", SecretKeyLen)
	case n.Role != RoleUser && n.Role != RoleAdmin:
		return nil, "", badField("invalid role %q: use user or admin", clip(n.Role))
	case n.UserID != "" && !events.ValidToken(n.UserID):
		return nil, "", badField("invalid user id %q", clip(n.UserID))
	case len(n.Email) > 256 || strings.ContainsAny(n.Email, " \t\r\n\x00"):
		return nil, "", badField("invalid email %q", clip(n.Email))
	case !events.ValidToken(n.Domain):
		return nil, "", badField("invalid domain %q", clip(n.Domain))
	}
	for _, g := range n.Groups {
		if !events.ValidToken(g) {
			return nil, "", badField("invalid group %q", clip(g))
		}
	}
	if _, err := k.GetPolicy(ctx, n.Policy); err != nil {
		return nil, "", err
	}
	if n.UserID == "" {
		n.UserID = strings.ToLower(n.AccessKey)
	}
	kp := &Keypair{
		AccessKey: n.AccessKey, UserID: n.UserID, Email: n.Email, Domain: n.Domain,
		Groups: n.Groups, Role: n.Role, Policy: n.Policy, CreatedAt: time.Now().UTC(),
	}
	kp.setSecret(n.SecretKey)
	if _, err := k.kv.Create(ctx, akKey(kp.AccessKey), mustJSON(kp)); err != nil {
		if errors.Is(err, jetstream.ErrKeyExists) {
			return nil, "", exists("access key %s already exists", kp.AccessKey)
		}
		return nil, "", err
	}
	return kp, n.SecretKey, nil
}

// EnsureAdmin stores ak/secret as an admin keypair unless ak already
// holds exactly that secret: what bai-server does at every start with
// the keypair of its credentials file.
func (k *Keys) EnsureAdmin(ctx context.Context, ak, secret string) error {
	kp, rev, err := k.Get(ctx, ak)
	switch {
	case errors.Is(err, ErrNoKeypair):
		_, _, err = k.Add(ctx, NewKeypair{AccessKey: ak, SecretKey: secret, Role: RoleAdmin, UserID: "admin"})
		return err
	case err != nil:
		return err
	case kp.checkSecret(secret) && kp.IsAdmin():
		return nil
	}
	kp.Role = RoleAdmin
	kp.setSecret(secret)
	kp.RotatedAt = time.Now().UTC() // a change, for Watch
	_, err = k.kv.Update(ctx, akKey(ak), mustJSON(kp), rev)
	return err
}

// Rotate gives ak a new secret and returns it; the old one stops working.
func (k *Keys) Rotate(ctx context.Context, ak string) (string, error) {
	kp, rev, err := k.Get(ctx, ak)
	if err != nil {
		return "", err
	}
	secret := NewSecretKey()
	kp.setSecret(secret)
	kp.RotatedAt = time.Now().UTC()
	if _, err := k.kv.Update(ctx, akKey(ak), mustJSON(kp), rev); err != nil {
		return "", err
	}
	return secret, nil
}

// Delete revokes ak.
func (k *Keys) Delete(ctx context.Context, ak string) error {
	if _, _, err := k.Get(ctx, ak); err != nil {
		return err
	}
	return k.kv.Delete(ctx, akKey(ak))
}

// List returns every keypair, sorted by access key.
func (k *Keys) List(ctx context.Context) ([]Keypair, error) {
	var out []Keypair
	err := k.each(ctx, "ak.", func(v []byte) error {
		var kp Keypair
		if err := json.Unmarshal(v, &kp); err != nil {
			return err
		}
		out = append(out, kp)
		return nil
	})
	sort.Slice(out, func(i, j int) bool { return out[i].AccessKey < out[j].AccessKey })
	return out, err
}

func (k *Keys) each(ctx context.Context, prefix string, f func([]byte) error) error {
	lister, err := k.kv.ListKeysFiltered(ctx, prefix+">")
	if err != nil {
		return err
	}
	defer func() { _ = lister.Stop() }()
	for key := range lister.Keys() {
		e, err := k.kv.Get(ctx, key)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue
		}
		if err != nil {
			return err
		}
		if err := f(e.Value()); err != nil {
			return err
		}
	}
	return nil
}

// GetPolicy returns the named policy.
func (k *Keys) GetPolicy(ctx context.Context, name string) (*Policy, error) {
	if !events.ValidToken(name) {
		return nil, fmt.Errorf("%w %q", ErrNoPolicy, clip(name))
	}
	e, err := k.kv.Get(ctx, policyKey(name))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, fmt.Errorf("%w %q", ErrNoPolicy, name)
	}
	if err != nil {
		return nil, err
	}
	var p Policy
	if err := json.Unmarshal(e.Value(), &p); err != nil {
		return nil, fmt.Errorf("policy %s: %w", name, err)
	}
	return &p, nil
}

// PutPolicy stores p; with create it must not exist yet.
func (k *Keys) PutPolicy(ctx context.Context, p Policy, create bool) error {
	if err := validatePolicy(&p); err != nil {
		return err
	}
	if create {
		if _, err := k.kv.Create(ctx, policyKey(p.Name), mustJSON(p)); errors.Is(err, jetstream.ErrKeyExists) {
			return exists("policy %q already exists", p.Name)
		} else {
			return err
		}
	}
	if _, err := k.GetPolicy(ctx, p.Name); err != nil {
		return err
	}
	_, err := k.kv.Put(ctx, policyKey(p.Name), mustJSON(p))
	return err
}

// ListPolicies returns every policy, sorted by name.
func (k *Keys) ListPolicies(ctx context.Context) ([]Policy, error) {
	var out []Policy
	err := k.each(ctx, "policy.", func(v []byte) error {
		var p Policy
		if err := json.Unmarshal(v, &p); err != nil {
			return err
		}
		out = append(out, p)
		return nil
	})
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, err
}

// Watch calls f with the access key of every keypair that is deleted, or
// whose secret or role changes, after the call, until ctx ends: how
// revocation and rotation reach live connections. Keypairs being added
// are not changes.
//
// Every write that changes a stored keypair (Rotate, EnsureAdmin) sets its
// RotatedAt, and Add never does, so each update tells by itself whether
// it is a change: Watch reads every update made after the call (no
// initial values) and does not compare it with a keypair's earlier
// value. The bucket keeps one value a key, so an earlier value can be gone
// before a watch reads it: a key added, or one among the watch's initial
// values not yet delivered, then rotated at once showed up first as the
// rotated value, which a comparison took for an add.
func (k *Keys) Watch(ctx context.Context, f func(ak string)) error {
	w, err := k.kv.Watch(ctx, "ak.>", jetstream.UpdatesOnly())
	if err != nil {
		return err
	}
	go func() {
		defer func() { _ = w.Stop() }()
		for {
			select {
			case <-ctx.Done():
				return
			case e, ok := <-w.Updates():
				if !ok {
					return
				}
				if e == nil {
					continue // no initial values with UpdatesOnly; kept safe
				}
				ak := strings.TrimPrefix(e.Key(), "ak.")
				if e.Operation() != jetstream.KeyValuePut {
					f(ak)
					continue
				}
				var kp Keypair
				if json.Unmarshal(e.Value(), &kp) != nil || !kp.RotatedAt.IsZero() {
					f(ak) // a changed keypair, or one no longer readable
				}
			}
		}
	}()
	return nil
}
