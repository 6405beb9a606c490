package registry

import (
	"maps"

	"github.com/bai-sh/bai/pkg/events"
)

// refusedFromAgent reports whether e, an event of the session info
// describes, speaks for a kernel that is not its publisher's (issue 12
// §4): an agent report without the agent id of the session's placement,
// or of a session not placed. It changes nothing and stays out of the
// session's history. An event of an unknown session is left to apply.
func refusedFromAgent(info *events.SessionInfo, e *events.Event) bool {
	return info.Status != events.StatusNone && events.NotFromPlacedAgent(info.AgentID, e)
}

// apply folds e, at stream sequence seq, into info: the session's state, or
// the zero value when the session is unknown. It reports whether the event
// belongs to a known session (once applied), that is, whether it goes into
// the session's history; an event of an unknown session other than
// session_enqueued changes nothing and reports false.
func apply(info *events.SessionInfo, e *events.Event, seq uint64) bool {
	if info.Status == events.StatusNone {
		if e.Name != events.EventEnqueued || e.Session == nil {
			return false
		}
		sp := e.Session
		// The access key and id come from the envelope, which Decode
		// checked against the subject.
		*info = events.SessionInfo{
			ID:             e.SessionID,
			Name:           sp.Name,
			AccessKey:      e.AccessKey,
			Image:          sp.Image,
			Type:           sp.Type,
			Status:         events.StatusPending,
			StatusChanged:  e.Time,
			CreatedAt:      sp.CreatedAt,
			Result:         events.ResultUndefined,
			Tag:            sp.Tag,
			Domain:         sp.Domain,
			Group:          sp.Group,
			ScalingGroup:   sp.ScalingGroup,
			MainKernelID:   sp.MainKernelID,
			Slots:          maps.Clone(sp.Slots),
			StartupCommand: sp.StartupCommand,
			LastSeq:        seq,
		}
		if info.Slots == nil {
			info.Slots = map[string]string{}
		}
		return true
	}

	// LastSeq is the sequence of the session's last event in the log, what
	// a publisher needs for Nats-Expected-Last-Subject-Sequence.
	info.LastSeq = seq
	if to, moved := events.Advance(info.Status, e); moved {
		if info.Status == events.StatusPending {
			info.StatusInfo = "" // why it waited no longer holds
		}
		info.Status = to
		info.StatusChanged = e.Time
		if e.Reason != "" {
			info.StatusInfo = string(e.Reason)
		}
		switch e.Name {
		case events.EventStarted:
			t := e.Time
			info.LastActivity = &t
		case events.EventScheduled:
			t := e.Time
			info.AgentID = e.AgentID
			info.ScheduledAt = &t
		case events.EventTerminated, events.EventCancelled:
			t := e.Time
			info.TerminatedAt = &t
		}
	}
	if e.Name == events.EventPendingInfo && info.Status == events.StatusPending {
		info.StatusInfo = string(e.Reason)
		if e.Message != "" {
			info.StatusInfo += ": " + e.Message
		}
	}
	switch e.Name {
	case events.EventExecuteRequest:
		// Running code resets the idle timer.
		t := e.Time
		info.LastActivity = &t
	case events.EventSuccess:
		info.Result = events.ResultSuccess
	case events.EventFailure:
		info.Result = events.ResultFailure
	}
	if e.ExitCode != nil {
		c := *e.ExitCode
		info.ExitCode = &c
	}
	return true
}
