package events

import (
	"fmt"
	"slices"
	"strconv"
	"time"
)

// Version is the payload version this package writes. Readers accept any
// version up to it; fields are only ever added.
const Version = 1

// Name is an event name, Backend.AI's where it has one. It is also the
// event's token in its subject.
type Name string

// The events.
const (
	// Published by the gateway.
	EventEnqueued         Name = "session_enqueued"          // → PENDING
	EventTerminateRequest Name = "session_terminate_request" // a user's rm; no status change
	EventExecuteRequest   Name = "session_execute_request"   // addressed to the agent: run code in the session

	// Published by the scheduler.
	EventScheduled   Name = "session_scheduled"   // addressed to the agent → SCHEDULED
	EventCancelled   Name = "session_cancelled"   // → CANCELLED (addressed to the agent once placed)
	EventTerminating Name = "session_terminating" // addressed to the agent → TERMINATING
	// EventKernelCheck is addressed to the agent a session is placed on
	// after that agent came back with another epoch (AgentEpoch, the one
	// asked): an agent without the kernel (its state was lost) ends the
	// session, reason kernel-lost. No status change.
	EventKernelCheck Name = "kernel_check"

	// Published by the agent.
	EventPreparing     Name = "session_preparing"    // → PREPARING
	EventPulling       Name = "kernel_pulling"       // → PULLING
	EventPullProgress  Name = "kernel_pull_progress" // progress only
	EventPrepared      Name = "kernel_prepared"      // → PREPARED
	EventCreating      Name = "kernel_creating"      // → CREATING
	EventKernelStarted Name = "kernel_started"       // kernel RUNNING
	EventStarted       Name = "session_started"      // → RUNNING
	EventKernelExited  Name = "kernel_terminated"    // the kernel is gone
	EventTerminated    Name = "session_terminated"   // → TERMINATED
	EventSuccess       Name = "session_success"      // a batch task ended with exit code 0
	EventFailure       Name = "session_failure"      // a batch task or start failed
	EventError         Name = "session_error"        // → ERROR

	// Published by the scheduler: why a session still waits (a failed
	// predicate); no status change. The registry shows it as status_info.
	EventPendingInfo Name = "session_pending_info"
	// Published by the scheduler on an agent's ledger subject
	// (AgentLedgerSubject), conditioned on the agent's last ledger
	// sequence, before it places anything there: Reservations lists the
	// placements it is about to publish on that agent, so two schedulers
	// cannot both commit the same capacity. No session, no status.
	EventAgentLedger Name = "agent_ledger"
)

type addressing uint8

const (
	toSession       addressing = iota // always on SessionEventSubject
	toAgent                           // always on AgentWorkSubject
	toAgentIfPlaced                   // on AgentWorkSubject when AgentID is set
)

type nameInfo struct {
	status Status // the status the session moves to; "" for none
	to     addressing
}

var names = map[Name]nameInfo{
	EventEnqueued:         {status: StatusPending},
	EventTerminateRequest: {},
	EventExecuteRequest:   {to: toAgent},
	EventScheduled:        {status: StatusScheduled, to: toAgent},
	EventCancelled:        {status: StatusCancelled, to: toAgentIfPlaced},
	EventTerminating:      {status: StatusTerminating, to: toAgent},
	EventKernelCheck:      {to: toAgent},
	EventPreparing:        {status: StatusPreparing},
	EventPulling:          {status: StatusPulling},
	EventPullProgress:     {},
	EventPrepared:         {status: StatusPrepared},
	EventCreating:         {status: StatusCreating},
	EventKernelStarted:    {},
	EventStarted:          {status: StatusRunning},
	EventKernelExited:     {},
	EventTerminated:       {status: StatusTerminated},
	EventSuccess:          {},
	EventFailure:          {},
	EventError:            {status: StatusError},
	EventPendingInfo:      {},
	EventAgentLedger:      {},
}

// Known reports whether n is one of the events.
func (n Name) Known() bool { _, ok := names[n]; return ok }

// Status is the status an event of this name moves its session to, or
// StatusNone when it moves nothing.
func (n Name) Status() Status { return names[n].status }

// AddressedToAgent reports whether an event of this name with this agent id
// carries the agent id as the last subject token. EventCancelled is
// addressed to an agent only once the session was placed; before that its
// AgentID is empty and it goes on the plain session subject.
func AddressedToAgent(n Name, agentID string) bool {
	switch names[n].to {
	case toAgent:
		return true
	case toAgentIfPlaced:
		return agentID != ""
	}
	return false
}

// Reason is a reason code carried by an event (status_info in `ps`).
type Reason string

// The reason codes, after Backend.AI's.
const (
	ReasonUserRequested  Reason = "user-requested"
	ReasonIdleTimeout    Reason = "idle-timeout"
	ReasonPendingTimeout Reason = "pending-timeout"
	ReasonAgentLost      Reason = "agent-lost"
	ReasonTaskFinished   Reason = "task-finished"
	ReasonFailedToStart  Reason = "failed-to-start"
	ReasonNoAgent        Reason = "no-available-agent"
	ReasonKilled         Reason = "killed"
	ReasonAgentRestarted Reason = "agent-restarted"
	// The agent the session is placed on has no record of its kernel
	// (its state was lost, or it never had it): the session ends.
	ReasonKernelLost Reason = "kernel-lost"
	// An execution killed at its kernel's memory limit, or refused a
	// process at its kernel's pids limit (process runtime's sandbox).
	ReasonOOMKilled Reason = "oom-killed"
	ReasonPidsLimit Reason = "pids-limit"
	// An execution that filled its kernel's work directory.
	ReasonDiskFull Reason = "disk-full"
	// A non-final status outlived its deadline (the message says which).
	ReasonStatusTimeout Reason = "status-timeout"
	// A dependency (--depends) ended without success.
	ReasonDependencyFailed Reason = "dependency-failed"
	// Why a session waits, on EventPendingInfo.
	ReasonStartsAt         Reason = "starts-at"
	ReasonDependsPending   Reason = "dependencies-not-finished"
	ReasonConcurrencyLimit Reason = "concurrency-limit"
	ReasonImageMinimum     Reason = "below-image-minimum"
	ReasonQueueBlocked     Reason = "queue-blocked"
	// A batch session outlived its --batch-timeout.
	ReasonBatchTimeout Reason = "batch-timeout"
	// A running session ended at its resource policy's max session
	// lifetime (the gateway's reaper).
	ReasonMaxLifetime Reason = "max-lifetime-exceeded"
)

// Event is the envelope of everything on the session log. Which fields are
// set depends on Name; the rest are empty.
type Event struct {
	V         int       `json:"v"`
	ID        string    `json:"id"` // unique; also the Nats-Msg-Id
	Name      Name      `json:"name"`
	Time      time.Time `json:"time"`
	AccessKey string    `json:"access_key"`
	SessionID string    `json:"session_id"`
	KernelID  string    `json:"kernel_id,omitempty"`
	AgentID   string    `json:"agent_id,omitempty"`
	// AgentEpoch is the agent's start count when it published, or, on
	// EventScheduled, the epoch of the agent the session was placed on.
	AgentEpoch uint64 `json:"agent_epoch,omitempty"`
	Reason     Reason `json:"reason,omitempty"`
	Message    string `json:"message,omitempty"`
	ExitCode   *int   `json:"exit_code,omitempty"`
	// Progress of a pull, 0 to 100, on EventPullProgress; -1 when unknown.
	Progress *int `json:"progress,omitempty"`
	// Session is the whole request, on EventEnqueued and EventScheduled.
	Session *SessionSpec `json:"session,omitempty"`
	// Run is the code to execute, on EventExecuteRequest.
	Run *RunSpec `json:"run,omitempty"`
	// Reservations are the placements a scheduler is about to publish on
	// the agent, on EventAgentLedger only.
	Reservations []Reservation `json:"reservations,omitempty"`
	// Steps are the events this one stands for as well, in order, each
	// with its own time: an agent folds the steps of a quick start
	// (session_preparing, kernel_prepared, kernel_creating, kernel_started)
	// into its session_started, and kernel_terminated into its
	// session_terminated, so that the log takes one write where it took up
	// to five. Readers apply the steps' statuses in order before the
	// event's own (Advance), and Expand gives them back as events.
	Steps []Step `json:"steps,omitempty"`
}

// Step is an event folded into another (Event.Steps): its name and time.
type Step struct {
	Name Name      `json:"name"`
	Time time.Time `json:"time"`
}

// foldable lists, per event, the events that may be folded into it as
// steps, in the only order they may come.
var foldable = map[Name][]Name{
	EventStarted:    {EventPreparing, EventPrepared, EventCreating, EventKernelStarted},
	EventTerminated: {EventKernelExited},
}

// checkSteps reports whether e's steps may be folded into it: names
// foldable into e's, in their order, each once.
func (e *Event) checkSteps() error {
	if len(e.Steps) == 0 {
		return nil
	}
	allowed := foldable[e.Name]
	for _, st := range e.Steps {
		i := slices.Index(allowed, st.Name)
		if i < 0 {
			return fmt.Errorf("%w: %s with step %q (not foldable into it, or out of order)", ErrBadEvent, e.Name, st.Name)
		}
		allowed = allowed[i+1:]
	}
	return nil
}

// Advance is the status a session in from is in after e: each of e's
// steps' statuses, then its own, applied in order where CanTransition
// allows them (a duplicate or a late step is absorbed). moved reports
// whether any of them applied.
func Advance(from Status, e *Event) (to Status, moved bool) {
	to = from
	for _, st := range e.Steps {
		if s := st.Name.Status(); s != StatusNone && CanTransition(to, s) {
			to, moved = s, true
		}
	}
	if s := e.Name.Status(); s != StatusNone && CanTransition(to, s) {
		to, moved = s, true
	}
	return to, moved
}

// ExpandAll is evs with each folded event expanded (Expand), in order;
// evs itself when none is folded.
func ExpandAll(evs []Event) []Event {
	folded := 0
	for i := range evs {
		folded += len(evs[i].Steps)
	}
	if folded == 0 {
		return evs
	}
	out := make([]Event, 0, len(evs)+folded)
	for i := range evs {
		for _, e := range evs[i].Expand() {
			out = append(out, *e)
		}
	}
	return out
}

// Expand is e as the events it stands for: one per step, with the step's
// name and time, an id derived from e's and e's other fields (no payload
// of e's own), then e without its steps. An event without steps is
// itself alone.
func (e *Event) Expand() []*Event {
	if len(e.Steps) == 0 {
		return []*Event{e}
	}
	out := make([]*Event, 0, len(e.Steps)+1)
	for i, st := range e.Steps {
		out = append(out, &Event{
			V: e.V, ID: e.ID + "." + strconv.Itoa(i+1), Name: st.Name, Time: st.Time,
			AccessKey: e.AccessKey, SessionID: e.SessionID, KernelID: e.KernelID,
			AgentID: e.AgentID, AgentEpoch: e.AgentEpoch,
		})
	}
	last := *e
	last.Steps = nil
	return append(out, &last)
}

// Reservation is one placement announced on an agent's ledger before it
// is published: the session, its slots, and the session's last sequence
// that the placement is conditioned on (so the reservation is void once
// the session's subject moves past it).
type Reservation struct {
	AccessKey string            `json:"access_key"`
	SessionID string            `json:"session_id"`
	Slots     map[string]string `json:"slots"`
	Seq       uint64            `json:"seq"`
}

// Status is the status this event moves its session to, or StatusNone.
func (e *Event) Status() Status { return e.Name.Status() }

// Validate checks what every event must carry.
func (e *Event) Validate() error {
	switch {
	case e.V < 1 || e.V > Version:
		return fmt.Errorf("%w: unsupported version %d", ErrBadEvent, e.V)
	case !e.Name.Known():
		return fmt.Errorf("%w: unknown event name %q", ErrBadEvent, e.Name)
	case e.ID == "":
		return fmt.Errorf("%w: %s without an id", ErrBadEvent, e.Name)
	case !ValidToken(e.AccessKey) || !ValidToken(e.SessionID):
		return fmt.Errorf("%w: %s with a bad access key or session id", ErrBadEvent, e.Name)
	case names[e.Name].to == toAgent && !ValidToken(e.AgentID):
		return fmt.Errorf("%w: %s without an agent id", ErrBadEvent, e.Name)
	case e.Name == EventEnqueued && e.Session == nil:
		return fmt.Errorf("%w: %s without a session", ErrBadEvent, e.Name)
	case e.Name == EventScheduled && e.Session == nil:
		return fmt.Errorf("%w: %s without a session", ErrBadEvent, e.Name)
	case e.Name == EventExecuteRequest && e.Run == nil:
		return fmt.Errorf("%w: %s without a run", ErrBadEvent, e.Name)
	case len(e.Reservations) > 0 && e.Name != EventAgentLedger:
		return fmt.Errorf("%w: %s with reservations", ErrBadEvent, e.Name)
	}
	if e.Session != nil {
		// A spec the gateway could not have admitted, or one for another
		// session than the envelope's (issue 12 §4).
		if err := e.Session.Validate(); err != nil {
			return fmt.Errorf("%w: %s with a bad session spec: %v", ErrBadEvent, e.Name, err)
		}
		if e.Session.ID != e.SessionID || e.Session.AccessKey != "" && e.Session.AccessKey != e.AccessKey {
			return fmt.Errorf("%w: %s with the spec of another session", ErrBadEvent, e.Name)
		}
	}
	for _, r := range e.Reservations {
		if !ValidToken(r.AccessKey) || !ValidToken(r.SessionID) {
			return fmt.Errorf("%w: %s reserving a bad access key or session id", ErrBadEvent, e.Name)
		}
	}
	return e.checkSteps()
}

// Decode parses and validates one event payload, and checks that it matches
// the subject it arrived on, so a publisher cannot speak for another
// session than the one its subject names.
func Decode(subject string, data []byte) (*Event, error) {
	if _, err := ParseSessionSubject(subject); err != nil {
		return nil, err
	}
	var e Event
	if err := Unmarshal(data, &e); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadEvent, err)
	}
	if err := e.Validate(); err != nil {
		return nil, err
	}
	if want, err := EventSubject(&e); err != nil || want != subject {
		return nil, fmt.Errorf("%w: payload of %s does not match subject %q", ErrBadEvent, e.Name, subject)
	}
	return &e, nil
}

// SessionType is interactive or batch.
type SessionType string

// The session types.
const (
	TypeInteractive SessionType = "interactive"
	TypeBatch       SessionType = "batch"
)

// Result of a session, as Backend.AI reports it.
type Result string

// The results.
const (
	ResultUndefined Result = "UNDEFINED"
	ResultSuccess   Result = "SUCCESS"
	ResultFailure   Result = "FAILURE"
)

// RunSpec is one execution of code in a session.
type RunSpec struct {
	ID   string `json:"id"`             // a subject token; the output subject's last token
	Code string `json:"code,omitempty"` // run through the image's interpreter
	Exec string `json:"exec,omitempty"` // a shell command line, run in the work directory
	// Files were uploaded (session.upload) for this run; the agent puts
	// them in the work directory, at these relative paths, before it runs.
	Files []string `json:"files,omitempty"`
}

// SessionSpec is an admitted session request, as the gateway resolved it.
type SessionSpec struct {
	ID             string            `json:"id"`
	Name           string            `json:"name"`
	AccessKey      string            `json:"access_key"`
	Image          string            `json:"image"`           // the full reference
	RequestedImage string            `json:"requested_image"` // what the user typed
	Type           SessionType       `json:"type"`
	Slots          map[string]string `json:"slots"` // canonical slots.Set.Map()
	Env            map[string]string `json:"env,omitempty"`
	Tag            string            `json:"tag,omitempty"`
	Domain         string            `json:"domain"`
	Group          string            `json:"group"`
	ScalingGroup   string            `json:"scaling_group"`
	StartupCommand string            `json:"startup_command,omitempty"`
	MainKernelID   string            `json:"main_kernel_id"`
	CreatedAt      time.Time         `json:"created_at"`
	// Run, when set, is executed as soon as the kernel is running.
	Run *RunSpec `json:"run,omitempty"`
	// Priority, 0 to 100, orders the queue before its policy; nil means
	// DefaultPriority.
	Priority *int `json:"priority,omitempty"`
	// StartsAt, when set, keeps the session pending until then.
	StartsAt *time.Time `json:"starts_at,omitempty"`
	// Depends lists session ids of the same owner that must have finished
	// successfully before this one is placed.
	Depends []string `json:"depends,omitempty"`
	// ConcurrencyLimit is the keypair's most sessions holding capacity at
	// once, as the gateway resolved it; 0 means no limit.
	ConcurrencyLimit int `json:"concurrency_limit,omitempty"`
	// MinSlots is the image's minimum resources; the scheduler refuses to
	// place a request below them.
	MinSlots map[string]string `json:"min_slots,omitempty"`
	// BatchTimeout ends a batch session still running after it.
	BatchTimeout time.Duration `json:"batch_timeout,omitempty"`
	// Network gives the kernel a network: the host's for the process
	// runtime, the default bridge for containers. Without it a kernel has
	// no interface but loopback.
	Network bool `json:"network,omitempty"`
}

// Session priorities.
const (
	MinPriority     = 0
	MaxPriority     = 100
	DefaultPriority = 10
)

// EffectivePriority is the spec's priority, DefaultPriority when unset.
func (s *SessionSpec) EffectivePriority() int {
	if s.Priority == nil {
		return DefaultPriority
	}
	return *s.Priority
}
