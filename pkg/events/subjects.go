package events

import (
	"fmt"
	"strings"
)

// MaxTokenLen bounds every id that becomes a subject token.
const MaxTokenLen = 64

// ValidToken reports whether s may stand as one subject token: 1 to
// MaxTokenLen characters of ASCII letters, digits, '-' and '_'. Dots,
// wildcards, whitespace and everything else are refused, so that an id can
// never widen a subject or a permission.
func ValidToken(s string) bool {
	if len(s) == 0 || len(s) > MaxTokenLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-', c == '_':
		default:
			return false
		}
	}
	return true
}

func checkTokens(kind string, toks ...string) error {
	for _, t := range toks {
		if !ValidToken(t) {
			return fmt.Errorf("%w: %s token %q", ErrBadSubject, kind, t)
		}
	}
	return nil
}

// SessionEventSubject builds the subject of a session event.
//
//	bai.session.<ak>.<sid>.<event>
func SessionEventSubject(ak, sid string, name Name) (string, error) {
	if err := checkTokens("session", ak, sid, string(name)); err != nil {
		return "", err
	}
	return "bai.session." + ak + "." + sid + "." + string(name), nil
}

// AgentWorkSubject builds the subject of a session event that one agent
// must act on (a placement, a termination, an execution).
//
//	bai.session.<ak>.<sid>.<event>.<agent_id>
func AgentWorkSubject(ak, sid string, name Name, agentID string) (string, error) {
	if err := checkTokens("agent work", ak, sid, string(name), agentID); err != nil {
		return "", err
	}
	return "bai.session." + ak + "." + sid + "." + string(name) + "." + agentID, nil
}

// EventSubject is the subject e is published on: AgentWorkSubject when the
// event's name is addressed to an agent, SessionEventSubject otherwise.
func EventSubject(e *Event) (string, error) {
	if AddressedToAgent(e.Name, e.AgentID) {
		return AgentWorkSubject(e.AccessKey, e.SessionID, e.Name, e.AgentID)
	}
	return SessionEventSubject(e.AccessKey, e.SessionID, e.Name)
}

// LedgerOwner is the owner token of agent ledger subjects. It is no access
// key (access keys never start with '_'), so no tenant's permissions cover it.
const LedgerOwner = "_ledger"

// AgentsProbeKey is the key of the agents' bucket that the scheduler
// writes to learn whether the bucket can store (a full disk): it is no
// agent's heartbeat, and every reader of the bucket skips it.
const AgentsProbeKey = "_scheduler_probe"

// AgentLedgerSubject is the subject of one agent's placement ledger: a
// session_agent_ledger event lands there with every placement on it.
//
//	bai.session._ledger.<agent_id>.agent_ledger
func AgentLedgerSubject(agentID string) (string, error) {
	return SessionEventSubject(LedgerOwner, agentID, EventAgentLedger)
}

// SessionFilter matches every event of one session.
//
//	bai.session.<ak>.<sid>.>
func SessionFilter(ak, sid string) (string, error) {
	if err := checkTokens("session", ak, sid); err != nil {
		return "", err
	}
	return "bai.session." + ak + "." + sid + ".>", nil
}

// OwnerSessionsFilter matches every session event of one access key.
//
//	bai.session.<ak>.>
func OwnerSessionsFilter(ak string) (string, error) {
	if err := checkTokens("owner", ak); err != nil {
		return "", err
	}
	return "bai.session." + ak + ".>", nil
}

// AllSessionsFilter matches the whole session log.
//
//	bai.session.>
const AllSessionsFilter = "bai.session.>"

// The live copies of the session log and of the output: the NATS server
// republishes every message the streams store, and only those, under
// bai.live.session.> and bai.live.out.>, with the stream's sequence in the
// Nats-Sequence header. Followers subscribe there: a publish the stream
// refused or dropped as a duplicate never reaches them.
const (
	// LiveAllSessionsFilter matches the live copy of every session event.
	LiveAllSessionsFilter = "bai.live.session.>"
	// LiveAllOutputFilter matches the live copy of all output.
	LiveAllOutputFilter = "bai.live.out.>"
	livePrefix          = "bai.live."
)

// LiveSessionFilter matches the live copy of one session's events.
//
//	bai.live.session.<ak>.<sid>.>
func LiveSessionFilter(ak, sid string) (string, error) {
	return live(SessionFilter(ak, sid))
}

// LiveOwnerSessionsFilter matches the live copy of one access key's
// session events.
//
//	bai.live.session.<ak>.>
func LiveOwnerSessionsFilter(ak string) (string, error) {
	return live(OwnerSessionsFilter(ak))
}

// live is the live copy of filter f (of the session log or the output).
func live(f string, err error) (string, error) {
	if err != nil {
		return "", err
	}
	return livePrefix + strings.TrimPrefix(f, "bai."), nil
}

// FromLive is the subject in the session log or the output stream of a
// live copy's subject.
func FromLive(subj string) (string, error) {
	if !strings.HasPrefix(subj, livePrefix+"session.") && !strings.HasPrefix(subj, livePrefix+"out.") {
		return "", fmt.Errorf("%w: %q is not a live subject", ErrBadSubject, subj)
	}
	return "bai." + strings.TrimPrefix(subj, livePrefix), nil
}

// AgentWorkFilter matches the work addressed to one agent in the session
// log. Agents do not consume it there (see AgentQueueSubject); it is the
// filter of the log's own record of an agent's work.
//
//	bai.session.*.*.*.<agent_id>
func AgentWorkFilter(agentID string) (string, error) {
	if err := checkTokens("agent", agentID); err != nil {
		return "", err
	}
	return "bai.session.*.*.*." + agentID, nil
}

// The work queue: the NATS server itself copies every event addressed to an
// agent from the session log into a stream of its own (a JetStream source
// with a subject transform), under one literal subject per agent. An
// agent's durable consumer filters that one subject, which the server finds
// by an index lookup; a wildcard filter over the session log cost the
// server a match over every subject of the log per agent and message.
const (
	// WorkSourceFilter selects the work events in the session log: the
	// six-token subjects, which only work addressed to an agent has.
	WorkSourceFilter = "bai.session.*.*.*.*"
	// WorkQueueTransform is where the server puts them: the agent id (the
	// sixth token) becomes the queue subject's last token.
	WorkQueueTransform = "bai.work.{{wildcard(4)}}"
	// WorkSourceHeader is the header in which the server records a copied
	// message's origin: "<stream> <seq> <filter> <transform> <subject> ...".
	WorkSourceHeader = "Nats-Stream-Source"
)

// AgentQueueSubject is the work queue subject of one agent.
//
//	bai.work.<agent_id>
func AgentQueueSubject(agentID string) (string, error) {
	if err := checkTokens("agent", agentID); err != nil {
		return "", err
	}
	return "bai.work." + agentID, nil
}

// WorkOrigin is the session log subject a work queue message was copied
// from, read from its WorkSourceHeader, checked to be work addressed to
// agentID.
func WorkOrigin(source, agentID string) (string, error) {
	f := strings.Fields(source)
	if len(f) < 5 {
		return "", fmt.Errorf("%w: work message without its origin (%s %q)", ErrBadSubject, WorkSourceHeader, source)
	}
	subj := f[4]
	ss, err := ParseSessionSubject(subj)
	if err != nil {
		return "", err
	}
	if ss.AgentID != agentID {
		return "", fmt.Errorf("%w: work for agent %q in the queue of %q", ErrBadSubject, ss.AgentID, agentID)
	}
	return subj, nil
}

// SessionSubject is a parsed session subject.
type SessionSubject struct {
	AccessKey string
	SessionID string
	Name      Name
	AgentID   string // set only on work addressed to an agent
}

// ParseSessionSubject parses bai.session.<ak>.<sid>.<event>[.<agent_id>].
func ParseSessionSubject(subj string) (SessionSubject, error) {
	parts := strings.Split(subj, ".")
	if len(parts) < 5 || len(parts) > 6 || parts[0] != "bai" || parts[1] != "session" {
		return SessionSubject{}, fmt.Errorf("%w: %q is not a session subject", ErrBadSubject, subj)
	}
	if err := checkTokens("session", parts[2:]...); err != nil {
		return SessionSubject{}, err
	}
	s := SessionSubject{AccessKey: parts[2], SessionID: parts[3], Name: Name(parts[4])}
	if !s.Name.Known() {
		return SessionSubject{}, fmt.Errorf("%w: unknown event %q in %q", ErrBadSubject, s.Name, subj)
	}
	if len(parts) == 6 {
		s.AgentID = parts[5]
	}
	if (s.AgentID != "") != AddressedToAgent(s.Name, s.AgentID) {
		return SessionSubject{}, fmt.Errorf("%w: event %q with wrong addressing in %q", ErrBadSubject, s.Name, subj)
	}
	return s, nil
}

// OutputSubject is where a run's stdout, stderr and exit code go, in order.
//
//	bai.out.<ak>.<sid>.<run_id>
func OutputSubject(ak, sid, runID string) (string, error) {
	if err := checkTokens("output", ak, sid, runID); err != nil {
		return "", err
	}
	return "bai.out." + ak + "." + sid + "." + runID, nil
}

// OutputFilter matches every run's output of one session.
//
//	bai.out.<ak>.<sid>.>
func OutputFilter(ak, sid string) (string, error) {
	if err := checkTokens("output", ak, sid); err != nil {
		return "", err
	}
	return "bai.out." + ak + "." + sid + ".>", nil
}

// OwnerOutputFilter matches every output of one access key.
//
//	bai.out.<ak>.>
func OwnerOutputFilter(ak string) (string, error) {
	if err := checkTokens("owner", ak); err != nil {
		return "", err
	}
	return "bai.out." + ak + ".>", nil
}

// LiveOutputFilter matches the live copy of every run's output of one
// session.
//
//	bai.live.out.<ak>.<sid>.>
func LiveOutputFilter(ak, sid string) (string, error) {
	return live(OutputFilter(ak, sid))
}

// LiveOwnerOutputFilter matches the live copy of one access key's output.
//
//	bai.live.out.<ak>.>
func LiveOwnerOutputFilter(ak string) (string, error) {
	return live(OwnerOutputFilter(ak))
}

// AllOutputFilter matches all output.
//
//	bai.out.>
const AllOutputFilter = "bai.out.>"

// API operations: the last two tokens of an API subject.
const (
	OpSessionCreate    = "session.create"
	OpSessionTerminate = "session.terminate"
	OpSessionList      = "session.list"
	OpSessionGet       = "session.get"
	OpSessionHistory   = "session.history"
	OpSessionUsage     = "session.usage"   // registry: what a key's unfinished sessions hold
	OpSessionExecute   = "session.execute" // gateway: run code in a live session
	OpSessionLogs      = "session.logs"    // registry: a session's output so far
	OpSessionUpload    = "session.upload"  // gateway: one file for a run
	OpImageList        = "image.list"      // gateway: images and their aliases
	OpImageAlias       = "image.alias"     // gateway: set an alias (admins)
)

// APISubject is the request subject of one API operation for one access key.
//
//	bai.api.<ak>.<object>.<verb>
func APISubject(ak, op string) (string, error) {
	if err := checkTokens("api", ak); err != nil {
		return "", err
	}
	return "bai.api." + ak + "." + op, nil
}

// APIPattern is what a service subscribes to for one operation, any key.
//
//	bai.api.*.<object>.<verb>
func APIPattern(op string) string { return "bai.api.*." + op }

// ParseAPISubject returns the access key and operation of an API subject.
func ParseAPISubject(subj string) (ak, op string, err error) {
	parts := strings.Split(subj, ".")
	if len(parts) != 5 || parts[0] != "bai" || parts[1] != "api" {
		return "", "", fmt.Errorf("%w: %q is not an API subject", ErrBadSubject, subj)
	}
	if err := checkTokens("api", parts[2:]...); err != nil {
		return "", "", err
	}
	return parts[2], parts[3] + "." + parts[4], nil
}

// InboxPrefix is the reply-inbox prefix a client with access key ak uses,
// so that replies to one tenant never cross another's subscriptions. Its
// first token is the same for every key, so that the services' publish
// permissions can name every tenant's inbox (TenantInboxes) and nothing
// else.
//
//	_INBOX_KEY.<ak>
func InboxPrefix(ak string) string { return tenantInboxBase + "." + ak }

// TenantInboxes matches every tenant's inbox: where the services answer.
//
//	_INBOX_KEY.*.>
const TenantInboxes = tenantInboxBase + ".*.>"

const tenantInboxBase = "_INBOX_KEY"
