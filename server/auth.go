package server

import (
	"fmt"

	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nkeys"
	"github.com/rs/zerolog"
)

// The NATS users the embedded services connect as. They are the callout's
// auth_users: the server checks their passwords itself; every other
// connection (every bai client) goes through the gateway's auth callout.
var serviceUsers = []string{"bai-auth", "bai-gateway", "bai-registry", "bai-scheduler", "bai-agent"}

// serviceAuth is the embedded server's authentication: one random
// password per service user (kept in memory, new at each start), and the
// account nkey that signs the callout's answers.
type serviceAuth struct {
	passwords map[string]string
	issuer    nkeys.KeyPair
}

func newServiceAuth() (*serviceAuth, error) {
	issuer, err := nkeys.CreateAccount()
	if err != nil {
		return nil, fmt.Errorf("server: issuer nkey: %w", err)
	}
	a := &serviceAuth{passwords: map[string]string{}, issuer: issuer}
	for _, u := range serviceUsers {
		a.passwords[u] = randomString(secretAlphabet, 40)
	}
	return a, nil
}

// configure sets the service users and the auth callout on opts.
func (a *serviceAuth) configure(opts *natsserver.Options) {
	pub, _ := a.issuer.PublicKey()
	for _, u := range serviceUsers {
		opts.Users = append(opts.Users, &natsserver.User{Username: u, Password: a.passwords[u]})
	}
	opts.AuthCallout = &natsserver.AuthCallout{Issuer: pub, AuthUsers: serviceUsers}
	opts.AuthTimeout = 5
}

// closeKey closes every client connection of access key ak (after it was
// revoked or rotated); they may reconnect only through the callout.
func closeKey(ns *natsserver.Server, log zerolog.Logger, ak string) {
	cz, err := ns.Connz(&natsserver.ConnzOptions{Username: true, User: ak, Limit: 1 << 16})
	if err != nil {
		log.Warn().Err(err).Msg("connz")
		return
	}
	for _, c := range cz.Conns {
		if err := ns.DisconnectClientByID(c.Cid); err == nil {
			log.Info().Str("access_key", ak).Uint64("cid", c.Cid).Msg("connection_closed_key_changed")
		}
	}
}
