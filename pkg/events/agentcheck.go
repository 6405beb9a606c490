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
