package gateway

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"
	"github.com/rs/zerolog"

	"github.com/bai-sh/bai/pkg/events/perms"
)

// AuthCalloutSubject is where the NATS server asks who a connection is.
const AuthCalloutSubject = "$SYS.REQ.USER.AUTH"

// DefaultUserJWTExpiry bounds how long a tenant connection lives on one
// authorization: when its user JWT expires the server closes it and the
// client reconnects through the callout again. It bounds revocation when
// nothing closes revoked connections sooner (AuthConfig.OnChange).
const DefaultUserJWTExpiry = 10 * time.Minute

// AuthConfig configures the auth callout service.
type AuthConfig struct {
	// NC is a connection as one of the server's auth_users. Required.
	NC *nats.Conn
	// Issuer is the account nkey (seed) the server trusts for callout
	// answers (its public key is authorization.auth_callout.issuer).
	// Required.
	Issuer nkeys.KeyPair
	// Account is the account tenants are placed in. Default "$G", the
	// global account of a server without accounts.
	Account string
	// Expiry of the user JWTs it issues. Default DefaultUserJWTExpiry.
	Expiry time.Duration
	// OnChange, when set, is called with an access key whose keypair was
	// deleted or changed (revoked, rotated, role changed): the embedded
	// server closes that key's live connections with it.
	OnChange func(ak string)
	// Replicas of the keypairs bucket. Default 1.
	Replicas int
	// Log is the logger. Default: zerolog.Nop().
	Log zerolog.Logger
}

// AuthService answers the NATS auth callout from the keypairs bucket,
// and serves the admin API of keypairs and policies.
type AuthService struct {
	cfg    AuthConfig
	log    zerolog.Logger
	issuer string
	js     jetstream.JetStream
	ready  chan struct{}
	once   sync.Once

	mu   sync.Mutex
	keys *Keys
}

// NewAuth validates cfg; it starts nothing.
func NewAuth(cfg AuthConfig) (*AuthService, error) {
	if cfg.NC == nil {
		return nil, fmt.Errorf("%w: NC is required", ErrConfig)
	}
	if cfg.Issuer == nil {
		return nil, fmt.Errorf("%w: Issuer is required", ErrConfig)
	}
	pub, err := cfg.Issuer.PublicKey()
	if err != nil || !nkeys.IsValidPublicAccountKey(pub) {
		return nil, fmt.Errorf("%w: Issuer must be an account nkey", ErrConfig)
	}
	if cfg.Account == "" {
		cfg.Account = "$G"
	}
	if cfg.Expiry <= 0 {
		cfg.Expiry = DefaultUserJWTExpiry
	}
	js, err := jetstream.New(cfg.NC)
	if err != nil {
		return nil, fmt.Errorf("%w: jetstream: %v", ErrConfig, err)
	}
	return &AuthService{
		cfg: cfg, log: cfg.Log.With().Str("component", "auth").Logger(),
		issuer: pub, js: js, ready: make(chan struct{}),
	}, nil
}

// Ready is closed once the callout answers.
func (a *AuthService) Ready() <-chan struct{} { return a.ready }

// Keys is the keypair store; valid once Ready.
func (a *AuthService) Keys() *Keys {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.keys
}

// Run serves until ctx ends.
func (a *AuthService) Run(ctx context.Context) error {
	keys, err := OpenKeys(ctx, a.js, a.cfg.Replicas)
	if err != nil {
		return err
	}
	a.mu.Lock()
	a.keys = keys
	a.mu.Unlock()
	if a.cfg.OnChange != nil {
		if err := keys.Watch(ctx, a.cfg.OnChange); err != nil {
			return fmt.Errorf("gateway: watch keypairs: %w", err)
		}
	}
	sub, err := a.cfg.NC.QueueSubscribe(AuthCalloutSubject, "bai-auth", a.handleAuth)
	if err != nil {
		return fmt.Errorf("gateway: auth callout: %w", err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	stop, err := a.serveAdmin(keys)
	if err != nil {
		return err
	}
	defer stop()
	if err := a.cfg.NC.Flush(); err != nil {
		return fmt.Errorf("gateway: auth callout: %w", err)
	}
	a.once.Do(func() { close(a.ready) })
	a.log.Info().Msg("auth_ready")
	<-ctx.Done()
	return nil
}

func (a *AuthService) handleAuth(m *nats.Msg) {
	req, err := jwt.DecodeAuthorizationRequestClaims(string(m.Data))
	if err != nil {
		a.log.Warn().Err(err).Msg("auth_bad_request")
		return // the server times the connection out
	}
	ak, secret := req.ConnectOptions.Username, req.ConnectOptions.Password
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var userJWT, errMsg string
	kp, err := a.keys.Verify(ctx, ak, secret)
	switch {
	case errors.Is(err, ErrBadCredentials):
		errMsg = err.Error()
		a.log.Info().Str("access_key", clip(ak)).Str("host", req.ClientInformation.Host).Msg("auth_refused")
	case err != nil:
		errMsg = "keypair store unavailable"
		a.log.Error().Err(err).Msg("auth_store")
	default:
		uc := jwt.NewUserClaims(req.UserNkey)
		uc.Name = ak
		uc.Audience = a.cfg.Account
		uc.Expires = time.Now().Add(a.cfg.Expiry).Unix()
		uc.Permissions = Permissions(ak, kp.IsAdmin())
		userJWT, err = uc.Encode(a.cfg.Issuer)
		if err != nil {
			errMsg = "could not sign user token"
			a.log.Error().Err(err).Msg("auth_sign")
		}
	}
	resp := jwt.NewAuthorizationResponseClaims(req.UserNkey)
	resp.Audience = req.Server.ID
	resp.Jwt, resp.Error = userJWT, errMsg
	token, err := resp.Encode(a.cfg.Issuer)
	if err != nil {
		a.log.Error().Err(err).Msg("auth_sign")
		return
	}
	_ = m.Respond([]byte(token))
}

// Permissions are what a connection with access key ak may do: the
// user's (or admin's) row of the permission table, perms.UserPermissions,
// as the user JWT's permissions.
func Permissions(ak string, admin bool) jwt.Permissions {
	up := perms.UserPermissions(ak, admin)
	var p jwt.Permissions
	p.Pub.Allow.Add(up.PubAllow...)
	p.Pub.Deny.Add(up.PubDeny...)
	p.Sub.Allow.Add(up.SubAllow...)
	p.Sub.Deny.Add(up.SubDeny...)
	return p
}
