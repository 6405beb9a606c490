// Package streams declares bai's JetStream streams and key-value buckets
// and provisions them. Every service calls Provision at start: it is
// idempotent, so whichever process comes first creates them.
package streams

import (
	"errors"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/bai-sh/bai/pkg/events"
)

// Names of the streams and buckets.
const (
	// Sessions is the session log: every session's history.
	Sessions = "BAI_SESSIONS"
	// Work is the agents' work queue: the server copies every event
	// addressed to an agent from the session log into it, under
	// events.AgentQueueSubject. Nothing publishes to it directly.
	Work = "BAI_WORK"
	// Output holds kernel stdout, stderr and exit codes.
	Output = "BAI_OUTPUT"
	// Agents is the KV bucket of agent heartbeats, keyed by agent id.
	Agents = "bai_agents"
	// Keypairs is the KV bucket of keypairs ("ak.<access key>", with a
	// "role" field) and resource policies, owned by the gateway.
	Keypairs = "bai_keypairs"
	// Leases is the KV bucket of leaderships (the scheduler's), whose keys
	// expire after the bucket's TTL unless renewed.
	Leases = "bai_leases"
)

// Pull options of the services' long-lived consumers of the log (the
// scheduler's, the registry's, the idle reaper's): the server sends a
// heartbeat every second while it has nothing to deliver, and nats.go
// remakes a consumer after two missed heartbeats. A pull consumer has been
// seen to stop delivering under load without any error (BENCHMARKS.md,
// third round); with the defaults (a 5 s heartbeat for an ordered consumer,
// 15 s for a durable one) that stopped placements for 10 s. The cause was
// found later, in nats.go's iterator: the scheduler and the registry read
// through Next, which does not wait for the missed heartbeats (the idle
// reaper's Consume still can, 2 s at most).
const (
	FollowHeartbeat = jetstream.PullHeartbeat(time.Second)
	FollowExpiry    = jetstream.PullExpiry(5 * time.Second)
)

// Options tune the provisioned streams.
type Options struct {
	// Replicas of every stream and bucket made or raised. Default (0):
	// DefaultReplicas of the connection, 3 in a cluster of 3 or more
	// nodes, else 1. Provisioning never lowers the replicas of an
	// existing stream or bucket (see Provision).
	Replicas int
	// SessionMaxAge bounds the session log. Default 30 days.
	SessionMaxAge time.Duration
	// OutputMaxAge bounds kept output. Default 7 days.
	OutputMaxAge time.Duration
	// OutputMaxBytes bounds kept output; JetStream reserves it on the
	// disk. Default: DefaultOutputMaxBytes for a new stream; an existing
	// stream keeps its own.
	OutputMaxBytes int64
}

// DefaultOutputMaxBytes is the output stream's size when made without
// Options.OutputMaxBytes: JetStream refuses to make a stream whose bytes
// its store limit (by default 3/4 of the disk's free space) cannot
// reserve, so it is sized for a laptop.
const DefaultOutputMaxBytes = 256 << 20

func (o *Options) fill() {
	if o.SessionMaxAge <= 0 {
		o.SessionMaxAge = 30 * 24 * time.Hour
	}
	if o.OutputMaxAge <= 0 {
		o.OutputMaxAge = 7 * 24 * time.Hour
	}
	if o.OutputMaxBytes <= 0 {
		o.OutputMaxBytes = DefaultOutputMaxBytes
	}
}

// SessionStreamConfig is the session log's configuration.
func SessionStreamConfig(o Options) jetstream.StreamConfig {
	o.fill()
	return jetstream.StreamConfig{
		Name:        Sessions,
		Description: "bai session log: the source of truth",
		Subjects:    []string{events.AllSessionsFilter},
		Storage:     jetstream.FileStorage,
		Retention:   jetstream.LimitsPolicy,
		MaxAge:      o.SessionMaxAge,
		Duplicates:  2 * time.Minute,
		Replicas:    o.Replicas,
		AllowDirect: true,
		// Followers (bai events, bai run) read the live copy: only what
		// the log stored, in its order. A core subscriber of the log's
		// own subjects would also get what the log refused (a placement
		// refused by its guard, a repeated create).
		RePublish: &jetstream.RePublish{Source: events.AllSessionsFilter, Destination: events.LiveAllSessionsFilter},
	}
}

// MaxAgentConsumers bounds the work queue's consumers (one per agent).
// The stream says it: a NATS server's own default is 1,000 per stream.
const MaxAgentConsumers = 1 << 20

// WorkStreamConfig is the work queue's configuration: sourced from the
// session log (work events only, renamed by their agent), with no subjects
// of its own, so no client can write to it; kept as long as the log.
func WorkStreamConfig(o Options) jetstream.StreamConfig {
	o.fill()
	return jetstream.StreamConfig{
		Name:        Work,
		Description: "bai agent work queue, copied from the session log",
		Storage:     jetstream.FileStorage,
		Retention:   jetstream.LimitsPolicy,
		MaxAge:      o.SessionMaxAge,
		Replicas:    o.Replicas,
		// Each work event carries its own unique msg id; the copy keeps
		// it, and a short window is enough to drop a re-copy.
		Duplicates:   time.Minute,
		MaxConsumers: MaxAgentConsumers,
		Sources: []*jetstream.StreamSource{{
			Name: Sessions,
			SubjectTransforms: []jetstream.SubjectTransformConfig{{
				Source: events.WorkSourceFilter, Destination: events.WorkQueueTransform,
			}},
		}},
	}
}

// OutputStreamConfig is the output stream's configuration.
func OutputStreamConfig(o Options) jetstream.StreamConfig {
	o.fill()
	return jetstream.StreamConfig{
		Name:        Output,
		Description: "bai kernel output",
		Subjects:    []string{events.AllOutputFilter},
		Storage:     jetstream.FileStorage,
		Retention:   jetstream.LimitsPolicy,
		MaxAge:      o.OutputMaxAge,
		MaxBytes:    o.OutputMaxBytes,
		Discard:     jetstream.DiscardOld,
		Replicas:    o.Replicas,
		AllowDirect: true,
		// Followers read the live copy (see SessionStreamConfig); an
		// output chunk sent again after a lost ack is stored, and
		// republished, once (each carries a message id).
		RePublish: &jetstream.RePublish{Source: events.AllOutputFilter, Destination: events.LiveAllOutputFilter},
	}
}

// AgentsBucketConfig is the agents bucket's configuration.
func AgentsBucketConfig(o Options) jetstream.KeyValueConfig {
	o.fill()
	return jetstream.KeyValueConfig{
		Bucket:      Agents,
		Description: "bai agent heartbeats",
		History:     1,
		Storage:     jetstream.FileStorage,
		Replicas:    o.Replicas,
	}
}

// LeasesBucketConfig is the leases bucket's configuration: a lease not
// renewed within ttl disappears.
func LeasesBucketConfig(o Options, ttl time.Duration) jetstream.KeyValueConfig {
	o.fill()
	return jetstream.KeyValueConfig{
		Bucket:      Leases,
		Description: "bai leader leases",
		History:     1,
		TTL:         ttl,
		Storage:     jetstream.FileStorage,
		Replicas:    o.Replicas,
	}
}

// IsWrongLastSequence reports whether a publish was refused because its
// expected last sequence no longer held: someone else wrote first.
func IsWrongLastSequence(err error) bool {
	var ae *jetstream.APIError
	if !errors.As(err, &ae) {
		return false
	}
	return ae.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		ae.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant
}
