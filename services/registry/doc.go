// Package registry is bai's materialized view of the session log: a durable
// JetStream consumer of every session event, projected into a bbolt file,
// and a micro service ("bai-registry") answering session.list, session.get
// and session.history for `bai ps`, `bai info` and `bai events`.
//
// # Projection
//
// apply is the one place that folds an event into a session's state. The
// status machine of package events decides every move, so an out-of-order
// or duplicate event is absorbed; every event of a known session, applied
// or not, is kept in the session's history, in log order, once.
//
// Each batch of messages is applied in one bbolt transaction that also
// records the last applied stream sequence; messages are acknowledged only
// after the commit, and a message at or below the recorded sequence is
// acknowledged and skipped. At start the durable consumer is reused when it
// delivered exactly what the file has applied, and recreated to start right
// after it otherwise (a lost or replaced file is rebuilt from the log).
//
// # Storage
//
// Buckets, keys built from subject tokens (which never hold '/'):
//
//	sessions    <ak>/<sid>                                    → JSON events.SessionInfo
//	names       <ak>/<name>                                   → sid of the latest created session of that name
//	history     <ak>/<sid>/<seq u64 BE>                       → the event's bytes as the log had them
//	by_changed  <ak>/<status_changed u64 BE, inverted>/<sid>  → status; most recent first, then by id
//	counts      <ak>/<status>                                 → u64 BE: sessions in that status
//	meta        applied_seq                                   → u64 BE: the last applied stream sequence
//
// A list reads the counts for its total and walks by_changed only as far as
// the page it returns.
package registry
