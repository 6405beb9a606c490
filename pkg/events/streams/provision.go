package streams

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// DefaultReplicas is the replica count of what bai makes when no count is
// configured: 3 when nc is connected to a cluster that advertises 3 or
// more servers (the URLs given plus those the server's INFO lists in
// connect_urls), else 1. A cluster started with no_advertise lists no
// peers: give the count (--replicas, BAI_REPLICAS) there.
func DefaultReplicas(nc *nats.Conn) int {
	if nc == nil || nc.ConnectedClusterName() == "" {
		return 1
	}
	if len(slices.Compact(slices.Sorted(slices.Values(nc.Servers())))) >= 3 {
		return 3
	}
	return 1
}

// ResolveReplicas resolves a configured replica count: 0 is
// DefaultReplicas of js's connection.
func ResolveReplicas(js jetstream.JetStream, n int) int {
	if n > 0 {
		return n
	}
	return DefaultReplicas(js.Conn())
}

// Provision creates every stream and the agents bucket, or brings them up
// to date, never lowering what an operator raised.
//
// What bai owns exactly (the subjects, the live copy, direct gets, the
// work queue's source, the discard policy) is set back to bai's value:
// the services depend on it. The sizes are raise-only: the replica count,
// MaxAge, MaxBytes, MaxConsumers and the duplicate window become the
// larger of the stream's value and bai's (unlimited counts as larger), so
// a stream an operator edited to R3 or to a longer retention keeps it.
// Settings bai does not set (placement, compression, MaxMsgs, metadata,
// ...) are left as they are.
//
// A stream that needs no change is not updated: every service calls this
// at start, often at once, and a needless config update races the
// server's consumer creation (seen as a data race inside nats-server
// under -race).
func Provision(ctx context.Context, js jetstream.JetStream, o Options) error {
	o.Replicas = ResolveReplicas(js, o.Replicas)
	for _, cfg := range []jetstream.StreamConfig{SessionStreamConfig(o), WorkStreamConfig(o), OutputStreamConfig(o)} {
		// Without a size of its own, the output stream keeps the size it
		// has (the server's --output-max-bytes, or an operator's edit):
		// DefaultOutputMaxBytes is only for making it.
		keepBytes := cfg.Name == Output && o.OutputMaxBytes <= 0
		if err := provisionStream(ctx, js, cfg, keepBytes); err != nil {
			return fmt.Errorf("provision stream %s: %w", cfg.Name, err)
		}
	}
	if _, err := ProvisionBucket(ctx, js, AgentsBucketConfig(o)); err != nil {
		return err
	}
	return nil
}

func provisionStream(ctx context.Context, js jetstream.JetStream, cfg jetstream.StreamConfig, keepBytes bool) error {
	st, err := js.Stream(ctx, cfg.Name)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		_, err = js.CreateStream(ctx, cfg)
		if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			return nil // another service made it first
		}
		return err
	}
	if err != nil {
		return err
	}
	have := st.CachedInfo().Config
	if keepBytes {
		cfg.MaxBytes = 0 // raise keeps have's
	}
	merged := raise(have, cfg)
	if sameStream(have, merged) {
		return nil
	}
	_, err = js.UpdateStream(ctx, merged)
	return err
}

// raise is have brought up to want: want's value for what bai owns, the
// larger of the two for the sizes, have's for everything else. A zero in
// want leaves have's value.
func raise(have, want jetstream.StreamConfig) jetstream.StreamConfig {
	out := have
	out.Description = want.Description
	out.Subjects = want.Subjects
	out.AllowDirect = want.AllowDirect
	out.AllowAtomicPublish = want.AllowAtomicPublish
	out.Discard = want.Discard
	out.RePublish = want.RePublish
	out.Sources = want.Sources
	out.Replicas = max(have.Replicas, want.Replicas, 1)
	out.MaxAge = time.Duration(raiseLimit(int64(have.MaxAge), int64(want.MaxAge)))
	out.MaxBytes = raiseLimit(have.MaxBytes, want.MaxBytes)
	out.MaxConsumers = int(raiseLimit(int64(have.MaxConsumers), int64(want.MaxConsumers)))
	if want.Duplicates > have.Duplicates {
		out.Duplicates = want.Duplicates
	}
	return out
}

// raiseLimit is the larger of two limits where zero or less is no limit
// (the largest); a zero want leaves have.
func raiseLimit(have, want int64) int64 {
	switch {
	case want == 0, have <= 0:
		return have
	case want < 0:
		return want
	}
	return max(have, want)
}

// sameStream reports whether merged (made by raise from have) changes
// nothing raise may change.
func sameStream(have, merged jetstream.StreamConfig) bool {
	return have.Description == merged.Description && slices.Equal(have.Subjects, merged.Subjects) &&
		have.AllowDirect == merged.AllowDirect && have.AllowAtomicPublish == merged.AllowAtomicPublish &&
		have.Discard == merged.Discard &&
		(have.RePublish == nil) == (merged.RePublish == nil) && (merged.RePublish == nil || *have.RePublish == *merged.RePublish) &&
		sameSources(merged.Sources, have.Sources) && have.Replicas == merged.Replicas &&
		have.MaxAge == merged.MaxAge && have.MaxBytes == merged.MaxBytes &&
		have.MaxConsumers == merged.MaxConsumers && have.Duplicates == merged.Duplicates
}

func sameSources(want, got []*jetstream.StreamSource) bool {
	return slices.EqualFunc(want, got, func(w, g *jetstream.StreamSource) bool {
		return w.Name == g.Name && slices.Equal(w.SubjectTransforms, g.SubjectTransforms)
	})
}

// ProvisionBucket opens the KV bucket cfg names, creating it when absent.
// An existing bucket is brought up to cfg as Provision does streams: its
// history and TTL (what the bucket means) are set to cfg's where cfg sets
// them; its replicas, MaxBytes and MaxValueSize are raise-only. A zero
// cfg.Replicas is DefaultReplicas.
func ProvisionBucket(ctx context.Context, js jetstream.JetStream, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	cfg.Replicas = ResolveReplicas(js, cfg.Replicas)
	err := raiseBacking(ctx, js, "KV_"+cfg.Bucket, func(have jetstream.StreamConfig) jetstream.StreamConfig {
		out := have
		if cfg.History > 0 {
			out.MaxMsgsPerSubject = int64(cfg.History)
		}
		if cfg.TTL > 0 {
			out.MaxAge = cfg.TTL
		}
		out.Replicas = max(have.Replicas, cfg.Replicas)
		out.MaxBytes = raiseLimit(have.MaxBytes, cfg.MaxBytes)
		out.MaxMsgSize = int32(raiseLimit(int64(have.MaxMsgSize), int64(cfg.MaxValueSize)))
		return out
	})
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		kv, err := js.CreateKeyValue(ctx, cfg)
		if errors.Is(err, jetstream.ErrBucketExists) {
			kv, err = js.KeyValue(ctx, cfg.Bucket) // another service made it first
		}
		if err != nil {
			return nil, fmt.Errorf("provision bucket %s: %w", cfg.Bucket, err)
		}
		return kv, nil
	}
	if err != nil {
		return nil, fmt.Errorf("provision bucket %s: %w", cfg.Bucket, err)
	}
	kv, err := js.KeyValue(ctx, cfg.Bucket)
	if err != nil {
		return nil, fmt.Errorf("provision bucket %s: %w", cfg.Bucket, err)
	}
	return kv, nil
}

// ProvisionObjectStore opens the object store cfg names, creating it when
// absent; an existing one gets cfg's TTL and raise-only replicas and
// MaxBytes, as ProvisionBucket.
func ProvisionObjectStore(ctx context.Context, js jetstream.JetStream, cfg jetstream.ObjectStoreConfig) (jetstream.ObjectStore, error) {
	cfg.Replicas = ResolveReplicas(js, cfg.Replicas)
	err := raiseBacking(ctx, js, "OBJ_"+cfg.Bucket, func(have jetstream.StreamConfig) jetstream.StreamConfig {
		out := have
		if cfg.TTL > 0 {
			out.MaxAge = cfg.TTL
		}
		out.Replicas = max(have.Replicas, cfg.Replicas)
		out.MaxBytes = raiseLimit(have.MaxBytes, cfg.MaxBytes)
		return out
	})
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		obs, err := js.CreateObjectStore(ctx, cfg)
		if errors.Is(err, jetstream.ErrBucketExists) {
			obs, err = js.ObjectStore(ctx, cfg.Bucket)
		}
		if err != nil {
			return nil, fmt.Errorf("provision object store %s: %w", cfg.Bucket, err)
		}
		return obs, nil
	}
	if err != nil {
		return nil, fmt.Errorf("provision object store %s: %w", cfg.Bucket, err)
	}
	obs, err := js.ObjectStore(ctx, cfg.Bucket)
	if err != nil {
		return nil, fmt.Errorf("provision object store %s: %w", cfg.Bucket, err)
	}
	return obs, nil
}

// raiseBacking updates the stream behind a bucket to up(its config) when
// that changes something; ErrStreamNotFound when there is none.
func raiseBacking(ctx context.Context, js jetstream.JetStream, stream string, up func(jetstream.StreamConfig) jetstream.StreamConfig) error {
	st, err := js.Stream(ctx, stream)
	if err != nil {
		return err
	}
	have := st.CachedInfo().Config
	want := up(have)
	if want.MaxMsgsPerSubject == have.MaxMsgsPerSubject && want.MaxAge == have.MaxAge && want.Replicas == have.Replicas &&
		want.MaxBytes == have.MaxBytes && want.MaxMsgSize == have.MaxMsgSize {
		return nil
	}
	_, err = js.UpdateStream(ctx, want)
	return err
}

// Permanent reports whether err, from provisioning, is one that waiting
// cannot fix: a configuration the server refuses (a bad request, more
// replicas than a server without clustering takes, more storage than the
// server has), not an unreachable or electing cluster.
func Permanent(err error) bool {
	var ae *jetstream.APIError
	if !errors.As(err, &ae) {
		return false
	}
	switch ae.ErrorCode {
	case 10005: // no suitable peers for placement: a node may be down
		return false
	case 10074, // replicas > 1 not supported in non-clustered mode
		10047, // insufficient storage resources available
		10028: // insufficient memory resources available
		return true
	}
	return ae.Code == 400
}

// Backoff bounds of Retry.
const (
	RetryFirstWait = 250 * time.Millisecond
	RetryMaxWait   = 10 * time.Second
)

// attemptTimeout bounds each attempt of Retry (a variable for tests).
var attemptTimeout = 10 * time.Second

// Retry calls f until it succeeds, ctx ends, or it fails with a Permanent
// error. Before each new attempt it calls onRetry (to log a line) and
// waits, from RetryFirstWait doubling up to RetryMaxWait. Each attempt
// gets at most 10 s; one that used them all was its own wait, and the
// next goes at once (onRetry is told a wait of 0): nats-server answers
// nothing, for its first 10 s, to a request about a stream that has no
// leader yet, and a cluster just formed has many. It is how the services
// wait for a NATS server that is not up yet or a cluster still electing
// its leaders.
func Retry(ctx context.Context, onRetry func(attempt int, wait time.Duration, err error), f func(context.Context) error) error {
	return retry(ctx, onRetry, f, Permanent)
}

// retry is Retry, ending on the errors for which final is true.
func retry(ctx context.Context, onRetry func(attempt int, wait time.Duration, err error), f func(context.Context) error,
	final func(error) bool) error {
	wait := RetryFirstWait
	for attempt := 1; ; attempt++ {
		actx, cancel := context.WithTimeout(ctx, attemptTimeout)
		err := f(actx)
		timedOut := errors.Is(actx.Err(), context.DeadlineExceeded) && ctx.Err() == nil
		cancel()
		switch {
		case err == nil:
			return nil
		case ctx.Err() != nil:
			return fmt.Errorf("%w (last error: %w)", ctx.Err(), err)
		case final(err):
			return err
		}
		if timedOut {
			if onRetry != nil {
				onRetry(attempt, 0, err)
			}
			continue
		}
		if onRetry != nil {
			onRetry(attempt, wait, err)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%w (last error: %w)", ctx.Err(), err)
		case <-t.C:
		}
		wait = min(2*wait, RetryMaxWait)
	}
}

// Transient reports whether err is NATS not answering for now: no
// responders, a timeout, a connection between servers, a 5xx answer (a
// stream or consumer without a leader yet, 503), no peers to place on. A
// refusal (4xx) or an error that is not NATS's (a disk, a file) is not.
func Transient(err error) bool {
	var ae *jetstream.APIError
	if errors.As(err, &ae) {
		return ae.Code >= 500 || ae.ErrorCode == 10005
	}
	for _, t := range []error{context.DeadlineExceeded, nats.ErrTimeout, nats.ErrNoResponders, nats.ErrConnectionReconnecting,
		nats.ErrDisconnected, jetstream.ErrJetStreamNotEnabled, jetstream.ErrNoHeartbeat} {
		if errors.Is(err, t) {
			return true
		}
	}
	return false
}

// RetryTransient is Retry for a service's set-up once it runs: it waits
// out what is Transient (a cluster electing, a node coming back) and
// returns any other error at once.
func RetryTransient(ctx context.Context, onRetry func(attempt int, wait time.Duration, err error), f func(context.Context) error) error {
	return retry(ctx, onRetry, f, func(err error) bool { return !Transient(err) })
}

// WaitProvision provisions with Retry: it waits, with a call of onRetry
// per attempt, while NATS is unreachable (the connection is not up yet),
// JetStream does not answer, or the cluster is electing. The services'
// binaries call it before they start, with a connection made with
// nats.RetryOnFailedConnect(true).
func WaitProvision(ctx context.Context, js jetstream.JetStream, o Options, onRetry func(attempt int, wait time.Duration, err error)) error {
	return Retry(ctx, onRetry, func(ctx context.Context) error {
		if !js.Conn().IsConnected() {
			return fmt.Errorf("not connected to NATS yet: %w", nats.ErrConnectionReconnecting)
		}
		return Provision(ctx, js, o)
	})
}
