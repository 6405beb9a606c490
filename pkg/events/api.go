package events

import (
	"errors"
	"fmt"
	"time"
)

// Errors of this package, and the codes that cross the request/reply API.
// A service answers a failed request with one of the Code* values (through
// micro's req.Error); the client turns the reply back into an *APIError,
// which matches the sentinel of its code with errors.Is.
var (
	// ErrBadSubject: a subject or token is malformed.
	ErrBadSubject = errors.New("bad subject")
	// ErrBadEvent: an event payload is malformed or does not match its subject.
	ErrBadEvent = errors.New("bad event")

	// ErrInvalid: the request is malformed or names something invalid (code 400).
	ErrInvalid = errors.New("invalid request")
	// ErrUnauthorized: the credentials are missing or wrong (code 401).
	ErrUnauthorized = errors.New("unauthorized")
	// ErrForbidden: the caller may not do this (code 403).
	ErrForbidden = errors.New("forbidden")
	// ErrNotFound: no such session (or other object) for this caller (code 404).
	ErrNotFound = errors.New("not found")
	// ErrConflict: the object is in a state that refuses the request (code 409).
	ErrConflict = errors.New("conflict")
	// ErrQuota: a policy limit refuses the request (code 429).
	ErrQuota = errors.New("quota exceeded")
	// ErrInternal: the service failed (code 500).
	ErrInternal = errors.New("internal error")
	// ErrBusy: the service is overloaded; retry later (code 503).
	ErrBusy = errors.New("busy, retry")
	// ErrNoSpace: the server is out of disk space and stores nothing new;
	// retry once space is freed (code 507).
	ErrNoSpace = errors.New("out of disk space")
)

// The error codes on the wire.
const (
	CodeInvalid      = "400"
	CodeUnauthorized = "401"
	CodeForbidden    = "403"
	CodeNotFound     = "404"
	CodeConflict     = "409"
	CodeQuota        = "429"
	CodeInternal     = "500"
	CodeBusy         = "503"
	CodeNoSpace      = "507"
)

var codeErrs = map[string]error{
	CodeInvalid:      ErrInvalid,
	CodeUnauthorized: ErrUnauthorized,
	CodeForbidden:    ErrForbidden,
	CodeNotFound:     ErrNotFound,
	CodeConflict:     ErrConflict,
	CodeQuota:        ErrQuota,
	CodeInternal:     ErrInternal,
	CodeBusy:         ErrBusy,
	CodeNoSpace:      ErrNoSpace,
}

// APIError is a failed API request as the client sees it.
type APIError struct {
	Code        string
	Description string
}

func (e *APIError) Error() string { return e.Description }

// Is matches the sentinel error of the code, and another *APIError with
// the same code.
func (e *APIError) Is(target error) bool {
	if t, ok := target.(*APIError); ok {
		return t.Code == e.Code
	}
	return codeErrs[e.Code] == target
}

// CodeOf returns the wire code for err: the code of the sentinel it wraps,
// CodeInternal for anything else.
func CodeOf(err error) string {
	var ae *APIError
	if errors.As(err, &ae) {
		return ae.Code
	}
	for code, s := range codeErrs {
		if errors.Is(err, s) {
			return code
		}
	}
	return CodeInternal
}

// Micro's error headers.
const (
	HeaderErrorCode = "Nats-Service-Error-Code"
	HeaderError     = "Nats-Service-Error"
)

// ErrorFromHeader turns a reply's headers into an *APIError, or nil when
// the reply is not an error. Pass map[string][]string(msg.Header).
func ErrorFromHeader(h map[string][]string) error {
	code := first(h[HeaderErrorCode])
	if code == "" {
		return nil
	}
	return &APIError{Code: code, Description: first(h[HeaderError])}
}

func first(v []string) string {
	if len(v) == 0 {
		return ""
	}
	return v[0]
}

// Errorf builds the *APIError of a sentinel's code, for a service to
// answer with; its message is the formatted text alone.
func Errorf(sentinel error, format string, args ...any) error {
	return &APIError{Code: CodeOf(sentinel), Description: fmt.Sprintf(format, args...)}
}

// Limits on request fields, enforced by the gateway.
const (
	MaxNameLen  = 64
	MaxTagLen   = 256
	MaxCodeLen  = 512 << 10
	MaxEnvVars  = 128
	MaxEnvLen   = 32 << 10
	MaxImageLen = 256
)

// CreateRequest asks for a new session (bai.api.<ak>.session.create).
type CreateRequest struct {
	// SessionID may be chosen by the client (a token); a retried request
	// with the same id is the same session. Empty: the gateway picks one.
	SessionID      string            `json:"session_id,omitempty"`
	Name           string            `json:"name,omitempty"`
	Image          string            `json:"image"`
	Slots          []string          `json:"slots,omitempty"` // "cpu=4", "mem=8g", as -r gives them
	Env            map[string]string `json:"env,omitempty"`
	Tag            string            `json:"tag,omitempty"`
	Type           SessionType       `json:"type,omitempty"`
	StartupCommand string            `json:"startup_command,omitempty"`
	Run            *RunSpec          `json:"run,omitempty"`
	// Owner creates the session for another access key; admins only.
	Owner string `json:"owner,omitempty"`
	// Priority, MinPriority to MaxPriority; nil means DefaultPriority.
	Priority *int `json:"priority,omitempty"`
	// StartsAt keeps the session pending until then (--starts-at).
	StartsAt *time.Time `json:"starts_at,omitempty"`
	// Depends lists ids of the caller's sessions that must have finished
	// successfully first (--depends), at most MaxDepends.
	Depends []string `json:"depends,omitempty"`
	// BatchTimeout ends a batch session still running after it (reason
	// batch-timeout); 0: no limit.
	BatchTimeout time.Duration `json:"batch_timeout,omitempty"`
	// Network asks for the host's network in the kernel (--network);
	// without it a kernel has none.
	Network bool `json:"network,omitempty"`
}

// MaxDepends bounds CreateRequest.Depends.
const MaxDepends = 32

// CreateResponse answers a CreateRequest.
type CreateResponse struct {
	SessionID string `json:"session_id"`
	Name      string `json:"name"`
	Image     string `json:"image"`
	// Duplicate is true when the request repeated an earlier one.
	Duplicate bool `json:"duplicate,omitempty"`
}

// TerminateRequest asks to end one session (bai.api.<ak>.session.terminate).
// A pending session is cancelled; a live one terminated.
type TerminateRequest struct {
	SessionID string `json:"session_id"`
	// AccessKey terminates another key's session: admins only. Empty:
	// the caller's own.
	AccessKey string `json:"access_key,omitempty"`
}

// TerminateResponse answers a TerminateRequest.
type TerminateResponse struct {
	SessionID string `json:"session_id"`
	Status    Status `json:"status"` // the status the request found
}

// ListRequest asks the registry for sessions (bai.api.<ak>.session.list).
type ListRequest struct {
	Statuses []Status `json:"statuses,omitempty"` // empty: DefaultListStatuses
	Limit    int      `json:"limit,omitempty"`    // 0: 10
	Offset   int      `json:"offset,omitempty"`
	// AccessKey lists another key's sessions: admins only. Empty: the
	// caller's own.
	AccessKey string `json:"access_key,omitempty"`
}

// ListResponse answers a ListRequest, most recently changed first.
type ListResponse struct {
	Sessions []SessionInfo `json:"sessions"`
	Total    int           `json:"total"`
	// Admin is true when the caller has the admin role (ps then shows
	// the owner's access key).
	Admin bool `json:"admin,omitempty"`
}

// UsageRequest asks the registry what one access key's unfinished
// sessions hold (bai.api.<ak>.session.usage): what a resource policy
// counts. The registry answers once its projection has applied the whole
// log as it stood when the request came, or answers busy: never from a
// projection behind it.
type UsageRequest struct {
	// SessionID, when set, asks whether that session is already known
	// (UsageResponse.Known): a retried create.
	SessionID string `json:"session_id,omitempty"`
	// AccessKey asks for another key's usage: admins only. Empty: the
	// caller's own.
	AccessKey string `json:"access_key,omitempty"`
	// MinSeq, when set, asks for an answer as soon as the projection has
	// applied the log up to it, rather than up to the log's end.
	MinSeq uint64 `json:"min_seq,omitempty"`
}

// UsageResponse answers a UsageRequest. Unfinished counts every session
// neither final nor in ERROR; Slots sums their requested slots.
type UsageResponse struct {
	Unfinished int               `json:"unfinished"`
	Pending    int               `json:"pending"`
	Slots      map[string]string `json:"slots"`
	Known      bool              `json:"known,omitempty"`
	// AppliedSeq is the log sequence the answer is as of.
	AppliedSeq uint64 `json:"applied_seq"`
}

// GetRequest asks for one session by id or name (session.get), or for its
// event history (session.history).
type GetRequest struct {
	Ref string `json:"ref"`
	// AccessKey names another key's session: admins only. Empty: the
	// caller's own.
	AccessKey string `json:"access_key,omitempty"`
}

// HistoryResponse is a session's events, in log order.
type HistoryResponse struct {
	Session SessionInfo `json:"session"`
	Events  []Event     `json:"events"`
}

// SessionInfo is a session as the registry knows it.
type SessionInfo struct {
	ID             string            `json:"id"`
	Name           string            `json:"name"`
	AccessKey      string            `json:"access_key"`
	Image          string            `json:"image"`
	Type           SessionType       `json:"type"`
	Status         Status            `json:"status"`
	StatusInfo     string            `json:"status_info,omitempty"`
	StatusChanged  time.Time         `json:"status_changed"`
	CreatedAt      time.Time         `json:"created_at"`
	ScheduledAt    *time.Time        `json:"scheduled_at,omitempty"`
	TerminatedAt   *time.Time        `json:"terminated_at,omitempty"`
	Result         Result            `json:"result"`
	Tag            string            `json:"tag,omitempty"`
	Domain         string            `json:"domain"`
	Group          string            `json:"group"`
	ScalingGroup   string            `json:"scaling_group"`
	MainKernelID   string            `json:"main_kernel_id"`
	AgentID        string            `json:"agent_id,omitempty"`
	Slots          map[string]string `json:"occupying_slots"`
	StartupCommand string            `json:"startup_command,omitempty"`
	ExitCode       *int              `json:"exit_code,omitempty"`
	// LastSeq is the log sequence of the last event applied.
	LastSeq uint64 `json:"last_seq"`

	// The rest are filled by the registry when it answers (see
	// SessionFields for the names ps -f knows them by).
	Registry       string         `json:"registry,omitempty"`
	ClusterMode    string         `json:"cluster_mode,omitempty"`
	ClusterSize    int            `json:"cluster_size,omitempty"`
	GroupID        string         `json:"group_id,omitempty"`
	UserID         string         `json:"user_id,omitempty"`
	UserEmail      string         `json:"user_email,omitempty"`
	AgentIDs       []string       `json:"agent_ids,omitempty"`
	StartsAt       *time.Time     `json:"starts_at,omitempty"`
	LastActivity   *time.Time     `json:"last_activity,omitempty"`
	ResourceOpts   map[string]any `json:"resource_opts,omitempty"`
	ServicePorts   []any          `json:"service_ports,omitempty"`
	Mounts         []string       `json:"mounts,omitempty"`
	Dependencies   []string       `json:"dependencies,omitempty"`
	AbusingReports []any          `json:"abusing_reports,omitempty"`
	IdleChecks     map[string]any `json:"idle_checks,omitempty"`
	// QueuePosition is a PENDING session's place in the queue, from 1.
	QueuePosition int `json:"queue_position,omitempty"`
}

// AgentInfo is an agent's heartbeat, the value of its key in the agents
// bucket.
type AgentInfo struct {
	V            int               `json:"v"`
	ID           string            `json:"id"`
	Epoch        uint64            `json:"epoch"` // start count; a restart bumps it
	Host         string            `json:"host"`
	Runtime      string            `json:"runtime"`
	ScalingGroup string            `json:"scaling_group"`
	Capacity     map[string]string `json:"capacity"` // canonical slots
	Images       []string          `json:"images,omitempty"`
	Heartbeat    time.Time         `json:"heartbeat"`
}
