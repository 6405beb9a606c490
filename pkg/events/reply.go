package events

import (
	"encoding/json"
	"fmt"
	"strings"
)

// Who may be answered. A request's reply subject is chosen by whoever
// publishes the request, and a service answers it with its own
// connection: a service that answered any reply subject would publish
// wherever a tenant asks (a JetStream API call, a KV key, another
// tenant's log). So every service answers a request only on a reply
// subject its requester owns, and refuses anything else without
// publishing:
//
//   - a request on an API subject (bai.api.<ak>.…, which only access key
//     ak may publish) is answered only under ak's own inbox,
//     InboxPrefix(ak) + ".";
//   - a request on a service API subject (bai.internal.<ak>.…, which only
//     the services may publish) is answered only under a service's inbox,
//     ServiceInboxPrefix(name) + ".".
//
// The NATS permissions of the services (package perms) hold the same
// line again: a service may publish replies only to these inboxes.

// maxReplyLen bounds a reply subject a service accepts.
const maxReplyLen = 256

// serviceInboxBase starts every service's inbox prefix.
const serviceInboxBase = "_INBOX_SVC_"

// ServiceInboxPrefix is the reply-inbox prefix of bai service name's own
// connection (gateway, registry, scheduler, auth), so that its
// subscribe permissions name its own inbox only.
//
//	_INBOX_SVC_<name>
func ServiceInboxPrefix(name string) string { return serviceInboxBase + name }

// AgentInboxPrefix is the reply-inbox prefix of agent id's connection, so
// that it reads no other connection's replies.
//
//	_INBOX_AGENT_<id>
func AgentInboxPrefix(id string) string { return "_INBOX_AGENT_" + id }

// ReplyAllowed reports whether a request of access key ak may be answered
// on reply: a literal subject under ak's own inbox, InboxPrefix(ak)+".".
// An empty reply, another key's inbox, the shared _INBOX, a JetStream,
// KV or object store subject, a bai subject, a wildcard: all refused.
func ReplyAllowed(ak, reply string) bool {
	if !ValidToken(ak) {
		return false
	}
	return underPrefix(reply, InboxPrefix(ak)+".")
}

// ServiceReplyAllowed reports whether a request on a service API subject
// (ServiceAPISubject) may be answered on reply: a literal subject under
// a service's inbox, ServiceInboxPrefix(name)+".".
func ServiceReplyAllowed(reply string) bool {
	rest, ok := strings.CutPrefix(reply, serviceInboxBase)
	if !ok {
		return false
	}
	name, _, ok := strings.Cut(rest, ".")
	return ok && ValidToken(name) && underPrefix(reply, ServiceInboxPrefix(name)+".")
}

// underPrefix reports whether subj is prefix followed by one or more
// literal tokens: no empty token, no wildcard, no whitespace or control
// character, at most maxReplyLen bytes.
func underPrefix(subj, prefix string) bool {
	rest, ok := strings.CutPrefix(subj, prefix)
	if !ok || rest == "" || len(subj) > maxReplyLen {
		return false
	}
	for tok := range strings.SplitSeq(rest, ".") {
		if tok == "" || tok == "*" || tok == ">" {
			return false
		}
		for i := 0; i < len(tok); i++ {
			if c := tok[i]; c <= ' ' || c == 0x7f {
				return false
			}
		}
	}
	return true
}

// ServiceAPISubject is the request subject of one API operation that a
// bai service asks another on behalf of access key ak (the gateway asks
// the registry for a key's sessions). No tenant may publish it, and its
// answer goes to the asking service's inbox.
//
//	bai.internal.<ak>.<object>.<verb>
func ServiceAPISubject(ak, op string) (string, error) {
	if err := checkTokens("service api", ak); err != nil {
		return "", err
	}
	return "bai.internal." + ak + "." + op, nil
}

// ServiceAPIPattern is what a service subscribes to for one operation
// asked by another service, any key.
//
//	bai.internal.*.<object>.<verb>
func ServiceAPIPattern(op string) string { return "bai.internal.*." + op }

// ParseRequestSubject returns the access key and operation of an API
// subject (bai.api.<ak>.<object>.<verb>) or of a service API subject
// (bai.internal.<ak>.<object>.<verb>, internal true).
func ParseRequestSubject(subj string) (ak, op string, internal bool, err error) {
	if rest, ok := strings.CutPrefix(subj, "bai.internal."); ok {
		ak, op, err = ParseAPISubject("bai.api." + rest)
		if err != nil {
			return "", "", false, fmt.Errorf("%w: %q is not a service API subject", ErrBadSubject, subj)
		}
		return ak, op, true, nil
	}
	ak, op, err = ParseAPISubject(subj)
	return ak, op, false, err
}

// RequestReplyAllowed is the one check every service endpoint makes
// before it does anything: the request on subject may be answered on
// reply (ReplyAllowed for an API subject, ServiceReplyAllowed for a
// service API subject). It also returns the caller's access key.
func RequestReplyAllowed(subject, reply string) (ak string, ok bool) {
	ak, _, internal, err := ParseRequestSubject(subject)
	if err != nil {
		return "", false
	}
	if internal {
		return ak, ServiceReplyAllowed(reply)
	}
	return ak, ReplyAllowed(ak, reply)
}

// ErrorReply is the JSON body of an error answer, beside micro's error
// headers (HeaderErrorCode, HeaderError): no answer is ever empty, since
// an empty body is a valid request to much of the JetStream API.
type ErrorReply struct {
	Error ErrorDetail `json:"error"`
}

// ErrorDetail is the code and description of an error answer.
type ErrorDetail struct {
	Code        string `json:"code"`
	Description string `json:"description"`
}

// ErrorBody is the JSON body of an error answer with code and description.
func ErrorBody(code, description string) []byte {
	b, err := json.Marshal(ErrorReply{Error: ErrorDetail{Code: code, Description: description}})
	if err != nil { // cannot happen: two strings
		return []byte(`{"error":{"code":"500","description":"error"}}`)
	}
	return b
}
