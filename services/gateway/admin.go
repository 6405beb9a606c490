package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"time"

	"github.com/nats-io/nats.go/micro"

	"github.com/bai-sh/bai/pkg/events"
)

// serveAdmin adds the keypair and policy endpoints; every one answers
// only an admin keypair.
func (a *AuthService) serveAdmin(keys *Keys) (func(), error) {
	svc, err := micro.AddService(a.cfg.NC, micro.Config{
		Name: "bai-keys", Version: "0.1.0", Description: "bai keypairs and resource policies",
	})
	if err != nil {
		return nil, err
	}
	ops := map[string]func(context.Context, []byte) (any, error){
		events.OpKeypairAdd:    func(ctx context.Context, d []byte) (any, error) { return adminAdd(ctx, keys, d) },
		events.OpKeypairList:   func(ctx context.Context, _ []byte) (any, error) { return adminList(ctx, keys) },
		events.OpKeypairInfo:   func(ctx context.Context, d []byte) (any, error) { return adminInfo(ctx, keys, d) },
		events.OpKeypairRemove: func(ctx context.Context, d []byte) (any, error) { return adminRemove(ctx, keys, d) },
		events.OpKeypairRotate: func(ctx context.Context, d []byte) (any, error) { return adminRotate(ctx, keys, d) },
		events.OpPolicyAdd:     func(ctx context.Context, d []byte) (any, error) { return adminPolicyPut(ctx, keys, d, true) },
		events.OpPolicySet:     func(ctx context.Context, d []byte) (any, error) { return adminPolicyPut(ctx, keys, d, false) },
		events.OpPolicyList: func(ctx context.Context, _ []byte) (any, error) {
			ps, err := keys.ListPolicies(ctx)
			return &events.PolicyListResponse{Policies: ps}, err
		},
	}
	for op, f := range ops {
		h := func(req micro.Request) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			resp, err := a.asAdmin(ctx, keys, req, op, f)
			respond(req, resp, err)
		}
		if err := svc.AddEndpoint(strings.ReplaceAll(op, ".", "_"), guard(a.log, h), micro.WithEndpointSubject(events.APIPattern(op))); err != nil {
			_ = svc.Stop()
			return nil, err
		}
	}
	return func() { _ = svc.Stop() }, nil
}

// asAdmin runs f when the caller (the access key of the subject, which
// the server lets only that key publish on) is an admin.
func (a *AuthService) asAdmin(ctx context.Context, keys *Keys, req micro.Request, op string, f func(context.Context, []byte) (any, error)) (any, error) {
	ak, err := callerKey(req)
	if err != nil {
		return nil, err
	}
	if err := RequireAdmin(ctx, keys, ak); err != nil {
		a.log.Warn().Str("access_key", ak).Str("op", op).Msg("admin_denied")
		return nil, err
	}
	resp, err := f(ctx, req.Data())
	if err != nil {
		return nil, apiError(err)
	}
	a.log.Info().Str("access_key", ak).Str("op", op).Msg("admin_op")
	return resp, nil
}

// RequireAdmin answers ErrForbidden unless ak is an admin keypair.
func RequireAdmin(ctx context.Context, keys *Keys, ak string) error {
	kp, _, err := keys.Get(ctx, ak)
	if err != nil && !errors.Is(err, ErrNoKeypair) {
		return events.Errorf(events.ErrInternal, "keypair store: %v", err)
	}
	if kp == nil || !kp.IsAdmin() {
		return events.Errorf(events.ErrForbidden, "access key %s is not an admin: this needs an admin keypair", ak)
	}
	return nil
}

// apiError gives a store error its API code.
func apiError(err error) error {
	var ae *events.APIError
	switch {
	case errors.As(err, &ae):
		return err
	case errors.Is(err, ErrNoKeypair), errors.Is(err, ErrNoPolicy):
		return events.Errorf(events.ErrNotFound, "%v", err)
	case errors.Is(err, ErrExists):
		return events.Errorf(events.ErrConflict, "%v", err)
	case errors.Is(err, ErrBadField):
		return events.Errorf(events.ErrInvalid, "%v", err)
	}
	return events.Errorf(events.ErrInternal, "%v", err)
}

func decodeStrict(what string, data []byte, v any) error {
	if err := json.Unmarshal(data, v); err != nil {
		return events.Errorf(events.ErrInvalid, "malformed %s request: %v", what, err)
	}
	return nil
}

func info(kp *Keypair, secret string) events.KeypairInfo {
	return events.KeypairInfo{
		AccessKey: kp.AccessKey, SecretKey: secret, UserID: kp.UserID, Email: kp.Email,
		Domain: kp.Domain, Groups: kp.Groups, Role: kp.Role, Policy: kp.Policy,
		CreatedAt: kp.CreatedAt, RotatedAt: kp.RotatedAt,
	}
}

func adminAdd(ctx context.Context, keys *Keys, data []byte) (any, error) {
	var r events.KeypairAddRequest
	if err := decodeStrict("keypair add", data, &r); err != nil {
		return nil, err
	}
	kp, secret, err := keys.Add(ctx, NewKeypair{
		UserID: r.UserID, Email: r.Email, Domain: r.Domain, Groups: r.Groups, Role: r.Role, Policy: r.Policy,
	})
	if err != nil {
		return nil, err
	}
	out := info(kp, secret)
	return &out, nil
}

func adminList(ctx context.Context, keys *Keys) (any, error) {
	kps, err := keys.List(ctx)
	if err != nil {
		return nil, err
	}
	out := &events.KeypairListResponse{Keypairs: make([]events.KeypairInfo, 0, len(kps))}
	for i := range kps {
		out.Keypairs = append(out.Keypairs, info(&kps[i], ""))
	}
	return out, nil
}

func keypairRef(data []byte) (string, error) {
	var r events.KeypairRequest
	if err := decodeStrict("keypair", data, &r); err != nil {
		return "", err
	}
	if !events.ValidToken(r.AccessKey) {
		return "", events.Errorf(events.ErrInvalid, "invalid access key %q", clip(r.AccessKey))
	}
	return r.AccessKey, nil
}

// refKeypair reads the request's keypair reference and the keypair.
func refKeypair(ctx context.Context, keys *Keys, data []byte) (*Keypair, error) {
	ak, err := keypairRef(data)
	if err != nil {
		return nil, err
	}
	kp, _, err := keys.Get(ctx, ak)
	return kp, err
}

func adminInfo(ctx context.Context, keys *Keys, data []byte) (any, error) {
	kp, err := refKeypair(ctx, keys, data)
	if err != nil {
		return nil, err
	}
	out := info(kp, "")
	return &out, nil
}

func adminRemove(ctx context.Context, keys *Keys, data []byte) (any, error) {
	kp, err := refKeypair(ctx, keys, data)
	if err != nil {
		return nil, err
	}
	if err := keys.Delete(ctx, kp.AccessKey); err != nil {
		return nil, err
	}
	out := info(kp, "")
	return &out, nil
}

func adminRotate(ctx context.Context, keys *Keys, data []byte) (any, error) {
	ak, err := keypairRef(data)
	if err != nil {
		return nil, err
	}
	secret, err := keys.Rotate(ctx, ak)
	if err != nil {
		return nil, err
	}
	kp, _, err := keys.Get(ctx, ak)
	if err != nil {
		return nil, err
	}
	out := info(kp, secret)
	return &out, nil
}

func adminPolicyPut(ctx context.Context, keys *Keys, data []byte, create bool) (any, error) {
	var p Policy
	if err := decodeStrict("policy", data, &p); err != nil {
		return nil, err
	}
	if err := keys.PutPolicy(ctx, p, create); err != nil {
		return nil, err
	}
	return &p, nil
}
