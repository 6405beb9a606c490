package server

import (
	"fmt"

	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
	"github.com/rs/zerolog"

	"github.com/bai-sh/bai/pkg/events"
	"github.com/bai-sh/bai/services/agent"
	"github.com/bai-sh/bai/services/gateway"
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
		user := &natsserver.User{Username: u, Password: a.passwords[u]}
		if u == "bai-agent" {
			user.Permissions = agentPermissions(a.agentID)
		}
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

// agentInboxPrefix is the reply-inbox prefix of agent id's connection, so
// that it reads no other connection's replies.
func agentInboxPrefix(id string) string { return "_INBOX_AGENT_" + id }

// agentPermissions confine an agent to its own role: publish session
// events (the plain five-token subjects, or work addressed to itself:
// never work for another agent), run output, its own heartbeat key, and
// the JetStream API calls of its own durable work consumer; subscribe
// only to its own inbox. It cannot read other agents' work, the keypairs
// bucket, or delete anything. That an event concerns a kernel placed on
// it is checked by the scheduler and registry against the placement.
func agentPermissions(id string) *natsserver.Permissions {
	const (
		stream = "BAI_SESSIONS"
		work   = "BAI_WORK"
	)
	durable := "bai-agent-" + id
	uploads := "OBJ_" + events.UploadBucket
	return &natsserver.Permissions{
		Publish: &natsserver.SubjectPermission{Allow: []string{
			"bai.session.*.*.*",
			"bai.session.*.*.*." + id,
			"bai.out.>",
			"$KV.bai_agents." + id,
			// Its own last heartbeat, read at start (its epoch continues
			// past it after a lost state db).
			"$JS.API.DIRECT.GET.KV_bai_agents.$KV.bai_agents." + id,
			"$JS.API.INFO",
			// The agent provisions the streams it uses, like every
			// service (an update with the same configuration changes
			// nothing); it may not delete or purge them.
			"$JS.API.STREAM.CREATE." + stream, "$JS.API.STREAM.UPDATE." + stream,
			"$JS.API.STREAM.CREATE." + work, "$JS.API.STREAM.UPDATE." + work, "$JS.API.STREAM.INFO." + work,
			"$JS.API.STREAM.CREATE.BAI_OUTPUT", "$JS.API.STREAM.UPDATE.BAI_OUTPUT", "$JS.API.STREAM.INFO.BAI_OUTPUT",
			"$JS.API.STREAM.CREATE.KV_bai_agents", "$JS.API.STREAM.UPDATE.KV_bai_agents",
			"$JS.API.STREAM.INFO." + stream,
			"$JS.API.STREAM.INFO.KV_bai_agents",
			// Its own durable consumer of the work queue. Only the create
			// form that names the filter in the subject (the server checks
			// the body against it), with its own subject: it cannot widen
			// its consumer to others' work.
			"$JS.API.CONSUMER.INFO." + work + "." + durable,
			"$JS.API.CONSUMER.DELETE." + work + "." + durable,
			"$JS.API.CONSUMER.CREATE." + work + "." + durable + ".bai.work." + id,
			"$JS.API.CONSUMER.MSG.NEXT." + work + "." + durable,
			"$JS.ACK." + work + "." + durable + ".>",
			// Files uploaded for runs placed on it: read, then delete.
			"$JS.API.STREAM.INFO." + uploads, "$JS.API.STREAM.MSG.GET." + uploads, "$JS.API.STREAM.PURGE." + uploads,
			"$JS.API.DIRECT.GET." + uploads + ".>", "$JS.API.CONSUMER.CREATE." + uploads, "$JS.API.CONSUMER.CREATE." + uploads + ".>",
			"$JS.API.CONSUMER.DELETE." + uploads + ".>", "$O." + events.UploadBucket + ".M.>", "$JS.FC.>",
		},
			// The agent ledgers are the scheduler's alone: an agent that
			// wrote there could make placements on any agent fail their
			// guard.
			Deny: []string{"bai.session." + events.LedgerOwner + ".>"},
		},
		Subscribe: &natsserver.SubjectPermission{Allow: []string{agentInboxPrefix(id) + ".>"}},
	}
}

// localAgentID is the id the embedded agent will take (stored in its
// state db, else made from the host name), learnt before NATS starts so
// that its NATS user can be scoped to it. agent.New reads only its
// config and state db here; the connection is never used.
func localAgentID(dataDir string) (string, error) {
	probe, err := agent.New(agent.Config{NC: &nats.Conn{}, DataDir: dataDir, Capacity: map[string]string{"cpu": "1"}})
	if err != nil {
		return "", err
	}
	return probe.ID(), nil
}

// logNATSError logs a service connection's asynchronous errors (a
// permissions violation among them).
func logNATSError(log zerolog.Logger, name string) nats.ErrHandler {
	return func(_ *nats.Conn, sub *nats.Subscription, err error) {
		ev := log.Warn().Err(err).Str("service", name)
		if sub != nil {
			ev = ev.Str("subject", sub.Subject)
		}
		ev.Msg("nats_error")
	}
}
