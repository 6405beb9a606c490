package events

import "github.com/nats-io/nuid"

// NewID is a new unique id: of an event (Event.ID, also its message id on
// the log) and of anything else a service names (a run, a lease holder,
// a scheduler instance). It is 22 characters from [0-9A-Za-z], so also a
// valid subject token, unique without coordination between processes.
func NewID() string { return nuid.Next() }
