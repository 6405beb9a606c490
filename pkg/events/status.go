package events

// Status is a session's (or kernel's) lifecycle status.
type Status string

// The statuses, as Backend.AI names them.
const (
	StatusNone        Status = "" // before session_enqueued
	StatusPending     Status = "PENDING"
	StatusScheduled   Status = "SCHEDULED"
	StatusPreparing   Status = "PREPARING"
	StatusPulling     Status = "PULLING"
	StatusPrepared    Status = "PREPARED"
	StatusCreating    Status = "CREATING"
	StatusRunning     Status = "RUNNING"
	StatusRestarting  Status = "RESTARTING"
	StatusResizing    Status = "RESIZING"
	StatusSuspended   Status = "SUSPENDED"
	StatusTerminating Status = "TERMINATING"
	StatusTerminated  Status = "TERMINATED"
	StatusError       Status = "ERROR"
	StatusCancelled   Status = "CANCELLED"
)

// AllStatuses lists every status in lifecycle order.
var AllStatuses = []Status{
	StatusPending, StatusScheduled, StatusPreparing, StatusPulling, StatusPrepared,
	StatusCreating, StatusRunning, StatusRestarting, StatusResizing, StatusSuspended,
	StatusTerminating, StatusTerminated, StatusError, StatusCancelled,
}

// transitions is the one table that decides every status move (DESIGN.md §4:
// Backend.AI's map with its PREPARED→CREATING gap fixed).
var transitions = func() map[Status]map[Status]bool {
	live := []Status{StatusRunning, StatusRestarting, StatusResizing, StatusSuspended}
	t := map[Status][]Status{
		StatusNone:        {StatusPending},
		StatusPending:     {StatusScheduled, StatusCancelled, StatusError},
		StatusScheduled:   {StatusPreparing, StatusPulling, StatusPrepared, StatusCancelled, StatusError},
		StatusPreparing:   {StatusPulling, StatusPrepared, StatusCancelled, StatusError},
		StatusPulling:     {StatusPrepared, StatusCancelled, StatusError},
		StatusPrepared:    {StatusCreating, StatusCancelled, StatusError},
		StatusCreating:    {StatusRunning, StatusTerminating, StatusCancelled, StatusError},
		StatusTerminating: {StatusTerminated, StatusError},
		StatusError:       {StatusTerminating, StatusTerminated},
		StatusTerminated:  nil,
		StatusCancelled:   nil,
	}
	for _, s := range live {
		var to []Status
		for _, o := range live {
			if o != s {
				to = append(to, o)
			}
		}
		t[s] = append(to, StatusTerminating, StatusTerminated, StatusError)
	}
	m := make(map[Status]map[Status]bool, len(t))
	for from, tos := range t {
		m[from] = make(map[Status]bool, len(tos))
		for _, to := range tos {
			m[from][to] = true
		}
	}
	return m
}()

// CanTransition reports whether a session in from may move to to. A move to
// the same status is not a transition (a duplicate is absorbed).
func CanTransition(from, to Status) bool { return transitions[from][to] }

// Valid reports whether s is one of the statuses.
func (s Status) Valid() bool {
	_, ok := transitions[s]
	return ok && s != StatusNone
}

// Final reports whether nothing can follow s.
func (s Status) Final() bool { return s == StatusTerminated || s == StatusCancelled }

// HoldsCapacity reports whether a session in s occupies its agent's slots:
// from its placement until it is final.
func (s Status) HoldsCapacity() bool {
	return s != StatusNone && s != StatusPending && !s.Final()
}

// Status filters of `ps`, as the manual page's table (plus SCHEDULED and
// PULLING, which bai also has).
var (
	DefaultListStatuses = []Status{
		StatusPending, StatusScheduled, StatusPreparing, StatusPulling, StatusPrepared,
		StatusCreating, StatusRunning, StatusRestarting, StatusTerminating, StatusResizing,
		StatusSuspended, StatusError,
	}
	RunningListStatuses = []Status{StatusCreating, StatusPulling, StatusRunning}
	DeadListStatuses    = []Status{StatusCancelled, StatusTerminated}
)
