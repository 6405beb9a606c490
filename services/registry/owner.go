package registry

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/bai-sh/bai/pkg/events"
	"github.com/bai-sh/bai/pkg/events/streams"
)

// owner is the access key a query is about: the caller's own (the key of
// the request subject, which only that key may publish on), or, when an
// admin asks, the one asked for. The caller's role is read from the
// keypairs bucket.
func (s *Service) owner(caller, asked string) (string, error) {
	if asked == "" || asked == caller {
		return caller, nil
	}
	if !events.ValidToken(asked) {
		return "", invalid("invalid access key %q", asked)
	}
	admin, err := s.isAdmin(caller)
	if err != nil {
		s.log.Error().Err(err).Msg("keypairs")
		return "", &events.APIError{Code: events.CodeInternal, Description: "cannot check the caller's role: " + err.Error()}
	}
	if !admin {
		s.log.Warn().Str("access_key", caller).Str("asked", asked).Msg("other_key_denied")
		return "", &events.APIError{Code: events.CodeForbidden, Description: "access key " + caller + " is not an admin: only an admin may see another key's sessions"}
	}
	return asked, nil
}

// isAdmin reports whether ak has the admin role: the configured admin key
// (the server's first keypair), or a keypair whose role in the keypairs
// bucket is admin.
func (s *Service) isAdmin(ak string) (bool, error) {
	if s.cfg.AdminAccessKey != "" && ak == s.cfg.AdminAccessKey {
		return true, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	js, err := jetstream.New(s.cfg.NC)
	if err != nil {
		return false, err
	}
	kv, err := js.KeyValue(ctx, streams.Keypairs)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	e, err := kv.Get(ctx, "ak."+ak)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	var kp struct {
		Role string `json:"role"`
	}
	if err := json.Unmarshal(e.Value(), &kp); err != nil {
		return false, err
	}
	return kp.Role == "admin", nil
}
