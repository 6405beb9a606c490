// Package events is bai's wire contract: the NATS subjects every service
// meets on, the JSON payloads carried there, the event names and reason
// codes (after Backend.AI's), the session status machine, the names and
// configurations of the JetStream streams and buckets, and the error codes
// that cross the request/reply API.
//
// Services never import each other; they agree only on what is here (and
// on package slots for resource quantities). This package imports nothing
// of the project's and only the standard library, so that any client in any
// language can be written from it.
//
// # Subjects
//
// A session's whole history lives under
//
//	bai.session.<access_key>.<session_id>.<event_name>
//
// and work addressed to one agent carries the agent id as a last token:
//
//	bai.session.<access_key>.<session_id>.<event_name>.<agent_id>
//
// so an agent's durable consumer filters bai.session.*.*.*.<agent_id>.
// Kernel output goes to bai.out.<access_key>.<session_id>.<run_id> and the
// request/reply API to bai.api.<access_key>.<object>.<verb>.
package events
