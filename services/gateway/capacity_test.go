package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/bai-sh/bai/internal/natstest"
	"github.com/bai-sh/bai/pkg/events"
	"github.com/bai-sh/bai/pkg/events/streams"
	"github.com/bai-sh/bai/pkg/slots"
)

// beat writes an agent's heartbeat into the agents' bucket.
func (f *fixture) beat(t *testing.T, id, group string, capacity map[string]string) {
	t.Helper()
	kv, err := f.js.KeyValue(context.Background(), streams.Agents)
	if err != nil {
		t.Fatal(err)
	}
	data, _ := json.Marshal(events.AgentInfo{V: events.Version, ID: id, ScalingGroup: group, Capacity: capacity, Heartbeat: time.Now().UTC()})
	if _, err := kv.Put(context.Background(), id, data); err != nil {
		t.Fatal(err)
	}
}

// TestImpossibleRequestsRefused: with agents known, a create that none of
// its scaling group could ever hold is refused with the largest agent's
// capacity, and nothing is stored; one that fits is admitted (and waits
// if the agent is busy: the gateway does not look at what is used).
// Before any agent is known, everything is admitted.
func TestImpossibleRequestsRefused(t *testing.T) {
	f := start(t, func(c *Config) { c.IdleTimeout = -1 })
	create := func(slots ...string) error {
		return f.call(t, events.OpSessionCreate, events.CreateRequest{Image: "python", Slots: slots}, nil)
	}
	// No agent yet: admitted, it waits.
	if err := create("cpu=99"); err != nil {
		t.Fatalf("with no agent known: %v", err)
	}
	f.beat(t, "agent-a", "default", map[string]string{"cpu": "2", "mem": "8g"})
	f.beat(t, "agent-b", "default", map[string]string{"cpu": "1", "mem": "32g"})
	f.beat(t, "agent-big", "other", map[string]string{"cpu": "128", "mem": "1t", "evil.slot": "1"})
	// Until the gateway has seen the heartbeats, cpu=99 is still admitted
	// (and stored); count from when it is refused.
	natstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if err := create("cpu=99"); err == nil {
			return errors.New("cpu=99 admitted")
		}
		return nil
	})
	before := f.count(t)
	for _, tc := range []struct {
		slots []string
		want  string
	}{
		{[]string{"cpu=99"}, "no agent can ever fit cpu=99: the largest agent has cpu=2, mem=8g"},
		{[]string{"cpu=2", "mem=16g"}, "no agent can ever fit mem=16g: the largest agent has cpu=2, mem=8g"},
		{[]string{"cpu=3", "mem=64g"}, "no agent can ever fit cpu=3, mem=64g: the largest agent has cpu=2, mem=8g"},
		{[]string{"evil.slot=1"}, `no agent offers the resource slot "evil.slot": the agents offer cpu, mem`},
		{[]string{"cuda.device=1"}, `no agent offers the resource slot "cuda.device": the agents offer cpu, mem`},
	} {
		err := create(tc.slots...)
		if !errors.Is(err, events.ErrInvalid) || err.Error() != tc.want {
			t.Errorf("%v: %v, want %q", tc.slots, err, tc.want)
		}
	}
	if n := f.count(t); n != before {
		t.Fatalf("refusals stored %d events", n-before)
	}
	// What one agent could hold is admitted: all of one, a zero of a slot
	// nobody offers.
	for _, s := range [][]string{{"cpu=2", "mem=8g"}, {"cpu=1", "mem=32g"}, {"cpu=0.5", "mem=16g"}, {"cpu=0.5", "evil.slot=0"}} {
		if err := create(s...); err != nil {
			t.Errorf("%v: %v", s, err)
		}
	}
	// An agent that stopped (its key deleted) still counts.
	kv, _ := f.js.KeyValue(context.Background(), streams.Agents)
	if err := kv.Delete(context.Background(), "agent-a"); err != nil {
		t.Fatal(err)
	}
	f.beat(t, "agent-c", "default", map[string]string{"cpu": "1", "mem": "1g", "cuda.device": "1"}) // after the delete in the watch
	natstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		return create("cpu=1", "mem=1g", "cuda.device=1")
	})
	if err := create("cpu=2", "mem=8g"); err != nil {
		t.Fatalf("fits the stopped agent-a: %v", err)
	}
}

// TestCapacityMemory: an agent's capacity counts for AgentMemory after
// its last heartbeat; with none left, everything is admitted.
func TestCapacityMemory(t *testing.T) {
	now := time.Now()
	c := newCapacities(time.Hour)
	c.now = func() time.Time { return now }
	c.agents["a"] = &agentCapacity{id: "a", group: "default", capacity: slots.Set{"cpu": 2_000_000}, seen: now.Add(-30 * time.Minute)}
	c.agents["old"] = &agentCapacity{id: "old", group: "default", capacity: slots.Set{"cpu": 64_000_000}, seen: now.Add(-2 * time.Hour)}
	big := slots.Set{"cpu": 4_000_000}
	if err := c.check("default", big); err == nil || err.Error() != "no agent can ever fit cpu=4: the largest agent has cpu=2" {
		t.Fatalf("cpu=4 with a 2-cpu agent and one gone for 2h: %v", err)
	}
	if err := c.check("other", big); err != nil {
		t.Fatalf("a group with no agent: %v", err)
	}
	now = now.Add(time.Hour)
	if err := c.check("default", big); err != nil {
		t.Fatalf("no agent seen within the hour: %v", err)
	}
	c.memory = -1
	now = now.Add(-time.Hour)
	if err := c.check("default", big); err != nil {
		t.Fatalf("check off: %v", err)
	}
}

// TestTagNotUTF8Refused: a create whose tag (or any text) is not UTF-8
// is refused, raw or as the U+FFFD a JSON encoder makes of it; nothing
// is stored.
func TestTagNotUTF8Refused(t *testing.T) {
	f := start(t, func(c *Config) { c.IdleTimeout = -1 })
	before := f.count(t)
	subj, _ := events.APISubject(ak, events.OpSessionCreate)
	raw := []byte(`{"image":"python","tag":"bad-` + "\xff\xfe" + `"}`)
	msg, err := requestAs(f.nc, ak, subj, raw)
	if err != nil {
		t.Fatal(err)
	}
	if err := events.ErrorFromHeader(msg.Header); !errors.Is(err, events.ErrInvalid) || !strings.Contains(err.Error(), "not UTF-8") {
		t.Fatalf("raw invalid UTF-8: %v", err)
	}
	// json.Marshal turns the bad bytes into U+FFFD, as the CLI sends them.
	// A lone surrogate escape, which the decoder turns into U+FFFD.
	msg, err = requestAs(f.nc, ak, subj, []byte(`{"image":"python","tag":"esc-\ud800"}`))
	if err != nil {
		t.Fatal(err)
	}
	if err := events.ErrorFromHeader(msg.Header); !errors.Is(err, events.ErrInvalid) || !strings.Contains(err.Error(), "invalid tag") {
		t.Fatalf("lone surrogate: %v", err)
	}
	for _, tag := range []string{"bad-\xff", "bad-\ufffd"} {
		err := f.call(t, events.OpSessionCreate, events.CreateRequest{Image: "python", Tag: tag}, nil)
		if !errors.Is(err, events.ErrInvalid) || !strings.Contains(err.Error(), "invalid tag") {
			t.Errorf("tag %q: %v", tag, err)
		}
	}
	if n := f.count(t); n != before {
		t.Fatalf("refusals stored %d events", n-before)
	}
	if err := f.call(t, events.OpSessionCreate, events.CreateRequest{Image: "python", Tag: "ok β-1"}, nil); err != nil {
		t.Fatalf("a good tag: %v", err)
	}
}

// TestReaperIgnoresForeignAgentReports (issue 12 §4): the idle reaper
// takes a start or an end only from the agent the session is placed on.
// A start forged for a pending session does not get it reaped (a pending
// session's terminate request would cancel it); an end forged by another
// agent, or without an agent id, does not spare a running one.
func TestReaperIgnoresForeignAgentReports(t *testing.T) {
	f := start(t, func(c *Config) { c.IdleTimeout = 200 * time.Millisecond })
	if err := f.call(t, events.OpSessionCreate, events.CreateRequest{SessionID: "pending", Image: "python"}, nil); err != nil {
		t.Fatal(err)
	}
	f.put(t, events.Event{Name: events.EventStarted, SessionID: "pending", AgentID: "ag1"})
	f.put(t, events.Event{Name: events.EventStarted, SessionID: "pending"})
	f.running(t, "run1")
	f.put(t, events.Event{Name: events.EventTerminated, SessionID: "run1", AgentID: "ag2"})
	f.running(t, "run2")
	f.put(t, events.Event{Name: events.EventError, SessionID: "run2"})
	natstest.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		for _, sid := range []string{"run1", "run2"} {
			if r := f.terminateReason(sid); r != events.ReasonIdleTimeout {
				return fmt.Errorf("%s: reason %q", sid, r)
			}
		}
		return nil
	})
	if r := f.terminateReason("pending"); r != "" {
		t.Fatalf("a pending session with a forged start was reaped: %q", r)
	}
}

// TestReaperQuietOnTheEndOfARemovedSession: the placed agent's end of a
// session the reaper let go of at its terminate request (every bai rm of
// a running session) is no forged report: nothing is logged.
func TestReaperQuietOnTheEndOfARemovedSession(t *testing.T) {
	log := &natstest.SyncBuffer{}
	f := start(t, func(c *Config) {
		c.IdleTimeout = time.Hour
		c.Log = zerolog.New(log)
	})
	f.running(t, "s1")
	if err := f.call(t, events.OpSessionTerminate, events.TerminateRequest{SessionID: "s1"}, nil); err != nil {
		t.Fatal(err)
	}
	f.put(t, events.Event{Name: events.EventTerminating, SessionID: "s1", AgentID: "ag1"})
	f.put(t, events.Event{Name: events.EventTerminated, SessionID: "s1", AgentID: "ag1"})
	// A forged start of a session never placed is still refused, and
	// said: once it is logged, the reaper has read past the ends above.
	f.put(t, events.Event{Name: events.EventStarted, SessionID: "s2", AgentID: "ag9"})
	natstest.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if !strings.Contains(log.String(), `"session_id":"s2"`) {
			return errors.New("the forged start is not logged yet")
		}
		return nil
	})
	if strings.Contains(log.String(), `"session_id":"s1","agent_id":"ag1","placed_on":"","message":"event_from_wrong_agent_refused"`) {
		t.Fatalf("the end of a removed session was logged as refused:\n%s", log.String())
	}
}
