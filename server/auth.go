package server

import (
	"errors"
	"fmt"
	"strings"
	"sync/atomic"

	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
	"github.com/rs/zerolog"

	"github.com/bai-sh/bai/pkg/events/perms"
	"github.com/bai-sh/bai/services/agent"
	"github.com/bai-sh/bai/services/gateway"
)

// The NATS users the embedded services connect as. They are the callout's
// auth_users: the server checks their passwords itself; every other
// connection (every bai client) goes through the gateway's auth callout.
var serviceUsers = []string{
	perms.ServiceUser(perms.Auth), perms.ServiceUser(perms.Gateway), perms.ServiceUser(perms.Registry),
	perms.ServiceUser(perms.Scheduler), agentUser,
}

// agentUser is the NATS user of the local agent.
const agentUser = "bai-agent"

// serviceAuth is the embedded server's authentication: one random
// password per service user (kept in memory, new at each start), and the
// account nkey that signs the callout's answers.
type serviceAuth struct {
	passwords map[string]string
	issuer    nkeys.KeyPair
	agentID   string // the bai-agent user's permissions are scoped to it
}

// newServiceAuth makes the service passwords and the issuer; the agent
// user may act only as agent agentID.
func newServiceAuth(agentID string) (*serviceAuth, error) {
	issuer, err := nkeys.CreateAccount()
	if err != nil {
		return nil, fmt.Errorf("server: issuer nkey: %w", err)
	}
	a := &serviceAuth{passwords: map[string]string{}, issuer: issuer, agentID: agentID}
	for _, u := range serviceUsers {
		a.passwords[u] = gateway.NewSecretKey()
	}
	return a, nil
}

// configure sets the service users and the auth callout on opts.
func (a *serviceAuth) configure(opts *natsserver.Options) {
	pub, _ := a.issuer.PublicKey()
	for _, u := range serviceUsers {
		// Every service user has its least permissions of the table: none
		// publishes everything.
		user := &natsserver.User{Username: u, Password: a.passwords[u], Permissions: a.userPermissions(u)}
		opts.Users = append(opts.Users, user)
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

// natsPermissions converts an identity's permissions of the table
// (package perms) into the embedded server's.
func natsPermissions(p perms.Permissions) *natsserver.Permissions {
	return &natsserver.Permissions{
		Publish:   &natsserver.SubjectPermission{Allow: p.PubAllow, Deny: p.PubDeny},
		Subscribe: &natsserver.SubjectPermission{Allow: p.SubAllow, Deny: p.SubDeny},
	}
}

// userPermissions are the permissions of service user u (bai-<service> or
// bai-agent, the local agent).
func (a *serviceAuth) userPermissions(u string) *natsserver.Permissions {
	if u == agentUser {
		return natsPermissions(perms.AgentPermissions(a.agentID))
	}
	p, ok := perms.ServicePermissions(strings.TrimPrefix(u, "bai-"))
	if !ok {
		panic("server: no permissions for service user " + u)
	}
	return natsPermissions(p)
}

// localAgentID is the id the embedded agent will take (stored in its
// state db, else made from the host name), learnt before NATS starts so
// that its NATS user can be scoped to it.
func localAgentID(dataDir string) (string, error) { return agent.LocalID(dataDir) }

// logNATSError logs a service connection's asynchronous errors (a
// permissions violation among them, which it also counts in violations:
// a service that needs more than its row of the table).
func logNATSError(log zerolog.Logger, name string, violations *atomic.Int64) nats.ErrHandler {
	return func(_ *nats.Conn, sub *nats.Subscription, err error) {
		if errors.Is(err, nats.ErrPermissionViolation) {
			violations.Add(1)
		}
		ev := log.Warn().Err(err).Str("service", name)
		if sub != nil {
			ev = ev.Str("subject", sub.Subject)
		}
		ev.Msg("nats_error")
	}
}
