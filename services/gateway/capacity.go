package gateway

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/bai-sh/bai/pkg/events"
	"github.com/bai-sh/bai/pkg/events/streams"
	"github.com/bai-sh/bai/pkg/slots"
)

// DefaultAgentMemory is Config.AgentMemory's default.
const DefaultAgentMemory = time.Hour

// capacities is what the gateway knows of the agents' capacity, from a
// watch of the agents' heartbeat bucket (no read per create): per agent,
// its scaling group, its advertised capacity and when its heartbeat was
// last written. Admission refuses a request that no agent of its scaling
// group seen within AgentMemory could ever hold, however idle (issue 15,
// "impossible requests"): a slot none of them offers (issue 12 §5), or
// more than any one of them has. A request that fits an agent that is
// only busy is admitted and waits.
//
// When no agent of the group was seen within AgentMemory (a first start
// before the local agent's first heartbeat, every agent down for long),
// nothing is known and every request is admitted: it waits, as it would
// for a busy agent, until an agent comes (or its pending timeout). An
// agent that stopped (its key deleted or expired) keeps counting for
// AgentMemory after its last heartbeat, so a request that fits an agent
// being restarted is not refused meanwhile.
type capacities struct {
	memory time.Duration
	now    func() time.Time

	mu     sync.RWMutex
	agents map[string]*agentCapacity
}

type agentCapacity struct {
	id       string
	group    string
	capacity slots.Set
	seen     time.Time
}

func newCapacities(memory time.Duration) *capacities {
	return &capacities{memory: memory, now: time.Now, agents: map[string]*agentCapacity{}}
}

// watch follows the agents' bucket until ctx ends. It returns once the
// bucket's current values are in (or ctx ends), so that the first create
// already sees the agents that are up; wg waits on the watch.
func (c *capacities) watch(ctx context.Context, js jetstream.JetStream, wg *sync.WaitGroup, s *Service) error {
	kv, err := js.KeyValue(ctx, streams.Agents)
	if err != nil {
		return fmt.Errorf("gateway: agents bucket: %w", err)
	}
	w, err := kv.WatchAll(ctx)
	if err != nil {
		return fmt.Errorf("gateway: watch agents: %w", err)
	}
	synced := make(chan struct{})
	wg.Go(func() {
		defer func() { _ = w.Stop() }()
		once := sync.OnceFunc(func() { close(synced) })
		defer once()
		for {
			select {
			case <-ctx.Done():
				return
			case e, ok := <-w.Updates():
				if !ok {
					return
				}
				if e == nil {
					once() // the current values are in
					continue
				}
				c.update(e, s)
			}
		}
	})
	select {
	case <-synced:
	case <-ctx.Done():
	}
	return nil
}

// update applies one entry of the agents' bucket.
func (c *capacities) update(e jetstream.KeyValueEntry, s *Service) {
	if e.Operation() != jetstream.KeyValuePut {
		// Gone: its capacity still counts until AgentMemory has passed
		// since its last heartbeat.
		return
	}
	if _, drain := events.DrainedAgent(e.Key()); drain || e.Key() == events.AgentsProbeKey {
		return // an admin's drain key or the scheduler's disk probe: no heartbeat
	}
	var info events.AgentInfo
	if err := events.Unmarshal(e.Value(), &info); err != nil || !events.ValidToken(info.ID) || info.ID != e.Key() {
		s.log.Warn().Str("key", e.Key()).Msg("bad_agent_heartbeat")
		return
	}
	capacity, err := slots.ParseMap(info.Capacity)
	if err != nil {
		s.log.Warn().Err(err).Str("agent_id", info.ID).Msg("bad_agent_capacity")
		return
	}
	seen := e.Created()
	if now := c.now(); seen.IsZero() || seen.After(now) {
		seen = now
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.agents[info.ID] = &agentCapacity{id: info.ID, group: info.ScalingGroup, capacity: capacity, seen: seen}
}

// check refuses req in scaling group group when no agent known there could
// ever hold it; it admits everything when no agent is known. The error
// is an ErrInvalid naming what does not fit and the largest agent.
func (c *capacities) check(group string, req slots.Set) error {
	if c == nil || c.memory < 0 {
		return nil
	}
	c.mu.RLock()
	defer c.mu.RUnlock()
	now := c.now()
	var known []*agentCapacity
	for _, a := range c.agents {
		if a.group == group && now.Sub(a.seen) <= c.memory {
			if req.Fits(a.capacity) {
				return nil
			}
			known = append(known, a)
		}
	}
	if len(known) == 0 {
		return nil
	}
	keys := make([]string, 0, len(req))
	for k, q := range req {
		if q > 0 {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	sort.Slice(known, func(i, j int) bool { return known[i].id < known[j].id })
	// A slot no agent offers.
	for _, k := range keys {
		offered := false
		for _, a := range known {
			if a.capacity[k] > 0 {
				offered = true
				break
			}
		}
		if !offered {
			return events.Errorf(events.ErrInvalid, "no agent offers the resource slot %q: the agents offer %s",
				clip(k), strings.Join(offeredKeys(known), ", "))
		}
	}
	// The largest agent: the one that holds the most of the requested
	// slots, then the most of the first of them it lacks.
	largest, best := known[0], -1
	for _, a := range known {
		n := 0
		for _, k := range keys {
			if req[k] <= a.capacity[k] {
				n++
			}
		}
		if n > best || n == best && larger(a, largest, keys) {
			largest, best = a, n
		}
	}
	var over []string
	for _, k := range keys {
		if req[k] > largest.capacity[k] {
			over = append(over, k+"="+slots.FormatValue(k, req[k]))
		}
	}
	return events.Errorf(events.ErrInvalid, "no agent can ever fit %s: the largest agent has %s",
		strings.Join(over, ", "), formatSet(largest.capacity))
}

// larger reports whether a holds more than b of the first requested slot
// in which they differ.
func larger(a, b *agentCapacity, keys []string) bool {
	for _, k := range keys {
		if a.capacity[k] != b.capacity[k] {
			return a.capacity[k] > b.capacity[k]
		}
	}
	return false
}

func offeredKeys(agents []*agentCapacity) []string {
	set := map[string]bool{}
	for _, a := range agents {
		for k, q := range a.capacity {
			if q > 0 {
				set[k] = true
			}
		}
	}
	out := make([]string, 0, len(set))
	for k := range set {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// formatSet writes s as "cpu=2, mem=8g".
func formatSet(s slots.Set) string {
	keys := make([]string, 0, len(s))
	for k, q := range s {
		if q > 0 {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	for i, k := range keys {
		keys[i] = k + "=" + slots.FormatValue(k, s[k])
	}
	return strings.Join(keys, ", ")
}
