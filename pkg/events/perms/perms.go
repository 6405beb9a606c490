// Package perms is the one table of what every bai identity may publish
// and subscribe to on NATS: a tenant keypair, an admin keypair, the
// gateway, the registry, the scheduler, the auth callout and each agent.
// The all-in-one server (server/auth.go), the gateway's auth callout (the
// user JWTs it signs) and the cluster configs (deploy/) all take their
// permissions from here, built from the subject builders of package events
// and the stream and bucket names of package streams, never from string
// literals of their own.
//
// The table is plain data (Permissions): converters to nats-server's
// permissions and to JWT permissions live with their users, so this
// package imports no NATS server code.
//
// The rules it holds (docs/security.md has the table as text):
//
//   - Nobody publishes everything. A service gets the JetStream API calls
//     of the streams, consumers and buckets it uses and no others; no
//     identity may delete a stream, and only the two that must may purge
//     (the gateway and the agent, the upload object store's chunks).
//   - Replies go only to inboxes: a service answers a tenant only under
//     events.TenantInboxes (and checks, per request, that the inbox is the
//     requester's own: events.RequestReplyAllowed); the registry answers
//     the gateway only under the gateway's inbox. Each service and agent
//     reads only its own inbox (events.ServiceInboxPrefix,
//     events.AgentInboxPrefix), no one the shared _INBOX.
//   - Session events are published only by the identity that emits them:
//     the gateway its requests, the scheduler its decisions and ledger,
//     an agent its kernels' events (never a create, a placement, a
//     termination order, a ledger entry).
package perms

import (
	"fmt"
	"slices"
	"strings"

	"github.com/bai-sh/bai/pkg/events"
	"github.com/bai-sh/bai/pkg/events/streams"
)

// Permissions are the subjects one NATS identity may publish and
// subscribe to. A subject is allowed when it matches an Allow entry and
// no Deny entry (NATS semantics; an empty Allow list allows nothing here:
// every identity of the table has one).
type Permissions struct {
	PubAllow []string `json:"pub_allow"`
	PubDeny  []string `json:"pub_deny,omitempty"`
	SubAllow []string `json:"sub_allow"`
	SubDeny  []string `json:"sub_deny,omitempty"`
}

// The service identities: each connects as NATS user "bai-<name>" with
// the reply-inbox prefix events.ServiceInboxPrefix(name).
const (
	Gateway   = "gateway"
	Registry  = "registry"
	Scheduler = "scheduler"
	Auth      = "auth"
)

// ServiceUser is the NATS user name of service name.
func ServiceUser(name string) string { return "bai-" + name }

// Bucket and stream names the table needs beyond package streams: the
// gateway's image aliases and admission leases, and the upload object
// store.
const (
	ImagesBucket    = "bai_images"
	AdmissionBucket = "bai_admission"
	// DefaultPolicyKey is the keypairs bucket key of the default resource
	// policy, which a gateway creates when it is missing.
	DefaultPolicyKey = "policy.default"
	// RegistryDurable is the registry's durable consumer of the session
	// log (registry.DefaultDurable).
	RegistryDurable = "bai-registry"
)

// The events each identity emits on the session log.
var (
	// GatewayEvents are published by the gateway (admission, rm,
	// execute, idle reaper). session_execute_request is addressed to the
	// session's agent (six tokens).
	GatewayEvents = []events.Name{events.EventEnqueued, events.EventTerminateRequest, events.EventExecuteRequest}
	// SchedulerEvents are published by the scheduler: placements,
	// cancellations, termination orders, pending info, the ledger, and the
	// final events of sessions that never reached (or lost) an agent.
	SchedulerEvents = []events.Name{
		events.EventScheduled, events.EventCancelled, events.EventTerminating, events.EventPendingInfo,
		events.EventAgentLedger, events.EventTerminated, events.EventError, events.EventKernelCheck,
	}
	// AgentEvents are the only events an agent may publish, each on the
	// five-token session subject: the steps of its kernels. Every other
	// event (a create, a placement, a termination order, a cancellation,
	// the ledger) is the gateway's or the scheduler's alone.
	AgentEvents = []events.Name{
		events.EventPreparing, events.EventPulling, events.EventPullProgress, events.EventPrepared,
		events.EventCreating, events.EventKernelStarted, events.EventStarted, events.EventKernelExited,
		events.EventTerminated, events.EventSuccess, events.EventFailure, events.EventError,
	}
)

// The API operations each service answers.
var (
	GatewayOps = []string{
		events.OpSessionCreate, events.OpSessionTerminate, events.OpSessionExecute, events.OpSessionUpload,
		events.OpSessionDownload, events.OpSessionFiles,
		events.OpImageList, events.OpImageAlias, events.OpImageAdd,
		events.OpAgentList, events.OpAgentDrain, events.OpAgentUndrain,
		events.OpAdminHealth,
	}
	RegistryOps = []string{
		events.OpSessionList, events.OpSessionGet, events.OpSessionHistory, events.OpSessionUsage, events.OpSessionLogs,
	}
	AuthOps = []string{
		events.OpKeypairAdd, events.OpKeypairList, events.OpKeypairInfo, events.OpKeypairRemove,
		events.OpKeypairRotate, events.OpPolicyAdd, events.OpPolicyList, events.OpPolicySet,
	}
	// GatewayAsksRegistry are the registry operations the gateway asks on
	// a service API subject (events.ServiceAPISubject): a session's status
	// before a terminate, a key's sessions for its resource policy.
	GatewayAsksRegistry = []string{events.OpSessionGet, events.OpSessionList, events.OpSessionUsage}
	// AgentFileVerbs are the file requests the gateway asks an agent
	// (events.AgentFilesSubject): bai download and bai ls.
	AgentFileVerbs = []string{events.AgentFilesRead, events.AgentFilesList}
)

// AuthCalloutSubject is where the NATS server asks the auth service who a
// connection is; the answer goes to the server's own inbox
// (AuthCalloutReplies).
const (
	AuthCalloutSubject = "$SYS.REQ.USER.AUTH"
	AuthCalloutReplies = "$SYS._INBOX.>"
)

// The NATS server's JetStream API and flow control.
const (
	jsAPI     = "$JS.API."
	jsInfo    = jsAPI + "INFO"
	jsFC      = "$JS.FC."
	jsAck     = "$JS.ACK."
	srvAll    = "$SRV.>" // micro's discovery (PING, INFO, STATS)
	kvPrefix  = "KV_"
	objPrefix = "OBJ_"
)

func kvStream(bucket string) string  { return kvPrefix + bucket }
func objStream(bucket string) string { return objPrefix + bucket }

// provisionAll is what streams.Provision calls: info, create and update
// of the three streams and the agents bucket. Never delete or purge.
func provisionAll() []string {
	var out []string
	for _, s := range []string{streams.Sessions, streams.Work, streams.Output, kvStream(streams.Agents)} {
		out = append(out, manage(s)...)
	}
	return out
}

// manage is info, create and update of one stream (or bucket's stream).
func manage(stream string) []string {
	return []string{jsAPI + "STREAM.INFO." + stream, jsAPI + "STREAM.CREATE." + stream, jsAPI + "STREAM.UPDATE." + stream}
}

// read is a stream's info and its direct and API message gets (a KV get,
// the last event of a subject).
func read(stream string) []string {
	return []string{
		jsAPI + "STREAM.INFO." + stream, jsAPI + "STREAM.MSG.GET." + stream,
		jsAPI + "DIRECT.GET." + stream, jsAPI + "DIRECT.GET." + stream + ".>",
	}
}

// follow is the ephemeral (ordered) consumers of one stream: a KV watch,
// a follower of the log or of the output. Their names are made by the
// client, so they are any name on that stream; their deliveries arrive on
// the identity's own inbox.
func follow(stream string) []string {
	return []string{
		jsAPI + "CONSUMER.CREATE." + stream, jsAPI + "CONSUMER.CREATE." + stream + ".>",
		jsAPI + "CONSUMER.INFO." + stream + ".>", jsAPI + "CONSUMER.DELETE." + stream + ".>",
		jsAPI + "CONSUMER.MSG.NEXT." + stream + ".>", jsFC + stream + ".>",
	}
}

// kvWrite is a put, create, update or delete of keys under pattern in
// bucket (a JetStream publish to $KV.<bucket>.<key>).
func kvWrite(bucket, keys string) string { return "$KV." + bucket + "." + keys }

func eventSubjects(names []events.Name) []string {
	var out []string
	for _, n := range names {
		// Placeholders "*" for the key and session: the subject builders
		// refuse them as tokens, so build the pattern from a known one.
		subj, _ := events.SessionEventSubject("K", "S", n)
		pat := "bai.session.*.*." + subj[len("bai.session.K.S."):]
		if events.AddressedToAgent(n, "A") {
			out = append(out, pat+".*")
		}
		if !events.AddressedToAgent(n, "") {
			out = append(out, pat)
		}
	}
	return out
}

func apiPatterns(ops []string, pattern func(string) string) []string {
	out := make([]string, 0, len(ops))
	for _, op := range ops {
		out = append(out, pattern(op))
	}
	return out
}

// healthReplies is where every service and agent answers the gateway's
// health pings (events.HealthInboxPrefix).
const healthReplies = events.HealthInboxPrefix + ".>"

// serviceBase is what every service has: the account's JetStream info,
// its own inbox (JetStream answers, acks and consumer deliveries arrive
// there) and micro's discovery subjects, answered to the gateway's
// health inbox.
func serviceBase(name string) Permissions {
	return Permissions{
		PubAllow: []string{jsInfo, healthReplies},
		SubAllow: []string{events.ServiceInboxPrefix(name) + ".>", srvAll},
	}
}

// GatewayPermissions are the gateway's: it answers its API on tenant
// inboxes; provisions the streams; publishes its events to the log; reads
// the log's last events and follows the log and the output (idle reaper);
// reads keypairs and policies (and creates the default policy); owns the
// image alias and admission buckets and the upload object store (whose
// overwritten chunks it purges); asks the registry on service API
// subjects.
func GatewayPermissions() Permissions {
	p := serviceBase(Gateway)
	p.SubAllow = append(p.SubAllow, apiPatterns(GatewayOps, events.APIPattern)...)
	p.PubAllow = append(p.PubAllow, events.TenantInboxes)
	p.PubAllow = append(p.PubAllow, apiPatterns(GatewayAsksRegistry, events.ServiceAPIPattern)...)
	p.PubAllow = append(p.PubAllow, provisionAll()...)
	p.PubAllow = append(p.PubAllow, eventSubjects(GatewayEvents)...)
	// admin.health: micro's ping and stats to every service, answered on
	// the health inbox.
	p.PubAllow = append(p.PubAllow, "$SRV.PING", "$SRV.STATS")
	p.SubAllow = append(p.SubAllow, healthReplies)
	p.PubAllow = append(p.PubAllow, read(streams.Sessions)...)
	p.PubAllow = append(p.PubAllow, follow(streams.Sessions)...)
	p.PubAllow = append(p.PubAllow, follow(streams.Output)...)
	keypairs := kvStream(streams.Keypairs)
	p.PubAllow = append(p.PubAllow, manage(keypairs)...)
	p.PubAllow = append(p.PubAllow, read(keypairs)...)
	p.PubAllow = append(p.PubAllow, kvWrite(streams.Keypairs, DefaultPolicyKey))
	// The agents' capacities, watched for admission; the admins' drain
	// keys; the leading scheduler's ledger per agent (agent list).
	agents := kvStream(streams.Agents)
	p.PubAllow = append(p.PubAllow, read(agents)...)
	p.PubAllow = append(p.PubAllow, follow(agents)...)
	p.PubAllow = append(p.PubAllow, kvWrite(streams.Agents, events.DrainKey("*")), events.SchedulerAgentsSubject)
	for _, b := range []string{ImagesBucket, AdmissionBucket} {
		p.PubAllow = append(p.PubAllow, manage(kvStream(b))...)
		p.PubAllow = append(p.PubAllow, read(kvStream(b))...)
		p.PubAllow = append(p.PubAllow, follow(kvStream(b))...)
		p.PubAllow = append(p.PubAllow, kvWrite(b, ">"))
	}
	uploads := objStream(events.UploadBucket)
	p.PubAllow = append(p.PubAllow, manage(uploads)...)
	p.PubAllow = append(p.PubAllow, read(uploads)...)
	p.PubAllow = append(p.PubAllow, follow(uploads)...)
	p.PubAllow = append(p.PubAllow, jsAPI+"STREAM.PURGE."+uploads, "$O."+events.UploadBucket+".>")
	// Files out: it asks a session's agent for a chunk or a listing.
	p.PubAllow = append(p.PubAllow, apiPatterns(AgentFileVerbs, events.AgentFilesPattern)...)
	return p.clean()
}

// RegistryPermissions are the registry's: it answers its API on tenant
// inboxes and the gateway's service API requests on the gateway's inbox;
// provisions the streams; consumes the log with its durable consumer;
// follows the output (logs); reads keypairs (the admin role).
func RegistryPermissions() Permissions { return RegistryPermissionsFor(RegistryDurable) }

// RegistryPermissionsFor are the permissions of a registry whose durable
// consumer of the log is durable (bai-registry --durable): each registry
// replica of a cluster has its own consumer, so each reads the whole log
// (one shared durable would split the log between them).
func RegistryPermissionsFor(durable string) Permissions {
	p := serviceBase(Registry)
	p.SubAllow = append(p.SubAllow, apiPatterns(RegistryOps, events.APIPattern)...)
	p.SubAllow = append(p.SubAllow, apiPatterns(RegistryOps, events.ServiceAPIPattern)...)
	p.PubAllow = append(p.PubAllow, events.TenantInboxes, events.ServiceInboxPrefix(Gateway)+".>")
	p.PubAllow = append(p.PubAllow, provisionAll()...)
	p.PubAllow = append(p.PubAllow, read(streams.Sessions)...)
	d := streams.Sessions + "." + durable
	p.PubAllow = append(p.PubAllow,
		jsAPI+"CONSUMER.INFO."+d, jsAPI+"CONSUMER.DELETE."+d,
		jsAPI+"CONSUMER.CREATE."+d, jsAPI+"CONSUMER.CREATE."+d+".>",
		jsAPI+"CONSUMER.MSG.NEXT."+d, jsAck+d+".>")
	p.PubAllow = append(p.PubAllow, follow(streams.Output)...)
	p.PubAllow = append(p.PubAllow, read(kvStream(streams.Keypairs))...)
	return p.clean()
}

// SchedulerPermissions are the scheduler's: it provisions the streams;
// follows the log; publishes its decisions (and the agents' ledgers);
// watches the agents bucket (read only); owns the leases bucket. It
// answers no API.
func SchedulerPermissions() Permissions {
	p := serviceBase(Scheduler)
	// Its ledger per agent, asked by the gateway (bai admin agent list).
	p.SubAllow = append(p.SubAllow, events.SchedulerAgentsSubject)
	p.PubAllow = append(p.PubAllow, events.ServiceInboxPrefix(Gateway)+".>")
	p.PubAllow = append(p.PubAllow, provisionAll()...)
	p.PubAllow = append(p.PubAllow, eventSubjects(SchedulerEvents)...)
	p.PubAllow = append(p.PubAllow, read(streams.Sessions)...)
	p.PubAllow = append(p.PubAllow, follow(streams.Sessions)...)
	agents := kvStream(streams.Agents)
	p.PubAllow = append(p.PubAllow, read(agents)...)
	p.PubAllow = append(p.PubAllow, follow(agents)...)
	leases := kvStream(streams.Leases)
	p.PubAllow = append(p.PubAllow, manage(leases)...)
	p.PubAllow = append(p.PubAllow, read(leases)...)
	p.PubAllow = append(p.PubAllow, follow(leases)...)
	p.PubAllow = append(p.PubAllow, kvWrite(streams.Leases, ">"))
	// The probe that tells a full disk from silent agents.
	p.PubAllow = append(p.PubAllow, kvWrite(streams.Agents, events.AgentsProbeKey))
	return p.clean()
}

// AuthPermissions are the auth service's: it answers the NATS server's
// auth callout and the keypair and policy admin API (on tenant inboxes;
// the service checks the admin role), and owns the keypairs bucket
// (create, read, watch, write and delete keys: an admin's keypair rm is
// a KV delete of one key, not a stream operation).
func AuthPermissions() Permissions {
	p := serviceBase(Auth)
	p.SubAllow = append(p.SubAllow, AuthCalloutSubject)
	p.SubAllow = append(p.SubAllow, apiPatterns(AuthOps, events.APIPattern)...)
	p.PubAllow = append(p.PubAllow, AuthCalloutReplies, events.TenantInboxes)
	keypairs := kvStream(streams.Keypairs)
	p.PubAllow = append(p.PubAllow, manage(keypairs)...)
	p.PubAllow = append(p.PubAllow, read(keypairs)...)
	p.PubAllow = append(p.PubAllow, follow(keypairs)...)
	p.PubAllow = append(p.PubAllow, kvWrite(streams.Keypairs, ">"))
	return p.clean()
}

// AgentService is the agents' micro service name.
const AgentService = "bai-agent"

// AgentDurable is the durable consumer of agent id on the work queue.
func AgentDurable(id string) string { return "bai-agent-" + id }

// AgentPermissions confine agent id to its own role: publish its
// kernels' events (AgentEvents only, on the five-token session subjects:
// never work for an agent, a create, a placement or a ledger entry), run
// output, its own heartbeat key, the JetStream calls of its own durable
// consumer of the work queue, read-then-delete of uploaded files, and
// answers to the gateway's file requests (on the gateway's inbox);
// subscribe only to its own inbox and to the gateway's file requests
// addressed to it (events.AgentFilesSubject). It cannot read other agents' work, the
// keypairs bucket, or delete a stream. That an event concerns a kernel
// placed on it is checked by the scheduler and the registry against the
// placement.
func AgentPermissions(id string) Permissions {
	work := streams.Work
	durable := AgentDurable(id)
	queue, _ := events.AgentQueueSubject(id)
	uploads := objStream(events.UploadBucket)
	p := Permissions{
		PubAllow: eventSubjects(AgentEvents),
		SubAllow: []string{events.AgentInboxPrefix(id) + ".>"},
	}
	// Its micro service (ping, info, stats, status) for the gateway's
	// health report, answered on the health inbox only. Micro names an
	// instance with a random id, hence the last wildcard.
	p.SubAllow = append(p.SubAllow, "$SRV.PING", "$SRV.INFO", "$SRV.STATS", "$SRV.*."+AgentService, "$SRV.*."+AgentService+".*")
	p.PubAllow = append(p.PubAllow, healthReplies)
	p.PubAllow = append(p.PubAllow,
		events.AllOutputFilter,
		kvWrite(streams.Agents, id),
		// Its own last heartbeat, read at start: its epoch continues
		// past it after a lost state db.
		"$JS.API.DIRECT.GET."+kvStream(streams.Agents)+"."+kvWrite(streams.Agents, id),
		jsInfo,
	)
	// The agent provisions the streams it uses, like every service (an
	// update with the same configuration changes nothing); it may not
	// delete or purge them.
	p.PubAllow = append(p.PubAllow, provisionAll()...)
	// Its own durable consumer of the work queue. Only the create form
	// that names the filter in the subject (the server checks the body
	// against it), with its own subject: it cannot widen its consumer to
	// others' work.
	p.PubAllow = append(p.PubAllow,
		jsAPI+"CONSUMER.INFO."+work+"."+durable,
		jsAPI+"CONSUMER.DELETE."+work+"."+durable,
		jsAPI+"CONSUMER.CREATE."+work+"."+durable+"."+queue,
		jsAPI+"CONSUMER.MSG.NEXT."+work+"."+durable,
		jsAck+work+"."+durable+".>",
	)
	// Files uploaded for runs placed on it: read, then delete.
	p.PubAllow = append(p.PubAllow,
		jsAPI+"STREAM.INFO."+uploads, jsAPI+"STREAM.MSG.GET."+uploads, jsAPI+"STREAM.PURGE."+uploads,
		jsAPI+"DIRECT.GET."+uploads+".>", jsAPI+"CONSUMER.CREATE."+uploads, jsAPI+"CONSUMER.CREATE."+uploads+".>",
		jsAPI+"CONSUMER.DELETE."+uploads+".>", "$O."+events.UploadBucket+".M.>", jsFC+uploads+".>",
	)
	// Files out: the gateway's requests for its own kernels' files,
	// answered on the gateway's inbox only.
	for _, v := range AgentFileVerbs {
		subj, _ := events.AgentFilesSubject(id, v)
		p.SubAllow = append(p.SubAllow, subj)
	}
	p.PubAllow = append(p.PubAllow, events.ServiceInboxPrefix(Gateway)+".>")
	// The agent ledgers are the scheduler's alone: an agent that wrote
	// there could make placements on any agent fail their guard.
	p.PubDeny = []string{"bai.session." + events.LedgerOwner + ".>"}
	return p.clean()
}

// UserPermissions are those of access key ak. A user publishes only its
// own API subjects, and subscribes only to the live copies of its own
// session events and output and to its own reply inbox: no JetStream API
// (a consumer would bypass subscribe permissions), no KV, no object store,
// no other key's inbox. An admin also subscribes to every session's
// events and output; it still publishes only its own API subjects, so the
// access key of an API subject is always the caller's and the services
// act for another key only when the caller is an admin in the keypairs
// bucket.
func UserPermissions(ak string, admin bool) Permissions {
	api, _ := events.APISubject(ak, ">")
	sessions, _ := events.LiveOwnerSessionsFilter(ak)
	output, _ := events.LiveOwnerOutputFilter(ak)
	if admin {
		sessions, output = events.LiveAllSessionsFilter, events.LiveAllOutputFilter
	}
	return Permissions{
		PubAllow: []string{api},
		SubAllow: []string{sessions, output, events.InboxPrefix(ak) + ".>"},
	}
}

// ServicePermissions are the permissions of service name (Gateway,
// Registry, Scheduler, Auth); ok is false for another name.
func ServicePermissions(name string) (p Permissions, ok bool) {
	switch name {
	case Gateway:
		return GatewayPermissions(), true
	case Registry:
		return RegistryPermissions(), true
	case Scheduler:
		return SchedulerPermissions(), true
	case Auth:
		return AuthPermissions(), true
	}
	return Permissions{}, false
}

// Services are the service identities, in the table's order.
var Services = []string{Gateway, Registry, Scheduler, Auth}

// Merge is the union of ps: the permissions of one connection that runs
// several services (a bai-gateway with --auth-issuer-seed-file runs the
// gateway and the auth callout on one connection: Merge(Gateway, Auth)).
func Merge(ps ...Permissions) Permissions {
	var out Permissions
	for _, p := range ps {
		out.PubAllow = append(out.PubAllow, p.PubAllow...)
		out.PubDeny = append(out.PubDeny, p.PubDeny...)
		out.SubAllow = append(out.SubAllow, p.SubAllow...)
		out.SubDeny = append(out.SubDeny, p.SubDeny...)
	}
	return out.clean()
}

// clean drops repeated subjects, keeping the first of each.
func (p Permissions) clean() Permissions {
	dedup := func(s []string) []string {
		var out []string
		for _, x := range s {
			if !slices.Contains(out, x) {
				out = append(out, x)
			}
		}
		return out
	}
	return Permissions{PubAllow: dedup(p.PubAllow), PubDeny: dedup(p.PubDeny), SubAllow: dedup(p.SubAllow), SubDeny: dedup(p.SubDeny)}
}

// Identity is one row of the table: who, how it connects, what it may do.
type Identity struct {
	// Name of the row: user, admin, gateway, registry, scheduler, auth,
	// agent.
	Name string
	// User is the NATS user name ("<access key>" for keypairs, through
	// the auth callout; "bai-<service>"; "bai-agent-<id>" per agent in a
	// cluster, "bai-agent" in the all-in-one server).
	User string
	// Inbox is the reply-inbox prefix the identity's connection uses.
	Inbox string
	Permissions
}

// Placeholders of Table's rows for a key and an agent id.
const (
	PlaceholderKey   = "AK"
	PlaceholderAgent = "ID"
)

// Table is every identity's permissions, keypairs and agents written for
// access key PlaceholderKey and agent id PlaceholderAgent: what
// docs/security.md shows and the cluster configs are made from.
func Table() []Identity {
	rows := []Identity{
		{Name: "user", User: PlaceholderKey, Inbox: events.InboxPrefix(PlaceholderKey), Permissions: UserPermissions(PlaceholderKey, false)},
		{Name: "admin", User: PlaceholderKey, Inbox: events.InboxPrefix(PlaceholderKey), Permissions: UserPermissions(PlaceholderKey, true)},
	}
	for _, s := range Services {
		p, _ := ServicePermissions(s)
		rows = append(rows, Identity{Name: s, User: ServiceUser(s), Inbox: events.ServiceInboxPrefix(s), Permissions: p})
	}
	return append(rows, Identity{Name: "agent", User: "bai-agent-" + PlaceholderAgent,
		Inbox: events.AgentInboxPrefix(PlaceholderAgent), Permissions: AgentPermissions(PlaceholderAgent)})
}

// OpsUser is the operators' NATS user of a cluster (bai-deploy makes it):
// not a bai identity, so not in Table, but its permissions are written
// here with the others and shown after them.
const OpsUser = "bai-ops"

// OpsPermissions are OpsUser's: the JetStream API (stream info, snapshots
// and restores for backups, consumer info) and replies to its own
// requests; nothing of the session subjects, the inboxes of bai's
// identities or the auth callout.
func OpsPermissions() Permissions {
	return Permissions{
		PubAllow: []string{"$JS.API.>", "$JS.SNAPSHOT.>", "$JS.ACK.>", "$JS.FC.>"},
		SubAllow: []string{"_INBOX.>"},
	}
}

// Markdown is Table as the Markdown of docs/security.md: one section per
// identity, each subject in backquotes, then OpsUser's.
func Markdown() string {
	var b strings.Builder
	list := func(what string, subjects []string) {
		if len(subjects) == 0 {
			return
		}
		b.WriteString("- " + what + ":")
		for _, s := range subjects {
			b.WriteString(" `" + s + "`")
		}
		b.WriteString("\n")
	}
	ops := Identity{Name: "ops (a cluster's operators, not a bai identity)", User: OpsUser, Inbox: "_INBOX", Permissions: OpsPermissions()}
	for _, id := range append(Table(), ops) {
		fmt.Fprintf(&b, "#### %s (NATS user `%s`, inbox `%s`)\n\n", id.Name, id.User, id.Inbox)
		list("publish", id.PubAllow)
		list("publish denied", id.PubDeny)
		list("subscribe", id.SubAllow)
		list("subscribe denied", id.SubDeny)
		b.WriteString("\n")
	}
	return strings.TrimSuffix(b.String(), "\n")
}
