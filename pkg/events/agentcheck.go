package events

// FromOtherAgent reports whether e claims to come from an agent other
// than placedOn, the agent the session is placed on: an agent event
// (preparing, running, terminated, an exit...) for a kernel that is not
// on it. The scheduler and the registry refuse such an event. Events
// that place a session (scheduled) and events of a session not placed
// yet are not agent events of a placed kernel and never match.
func FromOtherAgent(placedOn string, e *Event) bool {
	if placedOn == "" || e.AgentID == "" || e.AgentID == placedOn {
		return false
	}
	return e.Name != EventScheduled
}

// agentReports are the events an agent publishes about a kernel placed on
// it. The agents' NATS users may publish on every five-token session
// subject, so these names are what an agent can say about any session;
// the scheduler also publishes session_error and session_terminated (a
// lost agent, a status timeout), always with the agent id of the session's
// placement.
var agentReports = map[Name]bool{
	EventPreparing: true, EventPulling: true, EventPullProgress: true, EventPrepared: true,
	EventCreating: true, EventKernelStarted: true, EventStarted: true, EventKernelExited: true,
	EventTerminated: true, EventSuccess: true, EventFailure: true, EventError: true,
}

// AgentReport reports whether n is an event an agent publishes about a
// kernel placed on it.
func (n Name) AgentReport() bool { return agentReports[n] }

// NotFromPlacedAgent reports whether a service must refuse e for a
// session placed on agent placedOn ("" when not placed) because it speaks
// for a kernel that is not its publisher's: FromOtherAgent, or an agent
// report (AgentReport) whose agent id is not the placement's, missing
// included, or of a session not placed at all. The one exception is a
// session_terminated without an agent id on a session not placed: the
// scheduler's end of an ERROR that never reached an agent (no other
// status of an unplaced session can move to TERMINATED).
//
// The scheduler and the registry apply it to every event of the log
// (issue 12 §4): whatever an agent publishes, it moves only the sessions
// placed on it.
func NotFromPlacedAgent(placedOn string, e *Event) bool {
	if FromOtherAgent(placedOn, e) {
		return true
	}
	if !e.Name.AgentReport() {
		return false
	}
	if placedOn == "" {
		return !(e.Name == EventTerminated && e.AgentID == "")
	}
	return e.AgentID != placedOn
}
