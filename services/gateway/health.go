package gateway

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"
	"github.com/nats-io/nuid"

	"github.com/bai-sh/bai/pkg/events"
	"github.com/bai-sh/bai/pkg/events/streams"
)

// admin.health (admins only): the gateway asks micro's $SRV.STATS with
// its own connection (a tenant may not publish $SRV) on a health inbox
// of its own, and reports every service instance that answers, every
// agent of the agents bucket and every stream.

// Health gathering bounds: the answers to $SRV.STATS are gathered until
// healthQuiet passes without one, or healthWait in all.
const (
	healthWait  = 2 * time.Second
	healthQuiet = 300 * time.Millisecond
)

// The services a healthy mesh has at least one of (their micro names).
var healthRequired = []string{"bai-gateway", "bai-registry", "bai-scheduler", "bai-agent"}

// healthStreams are the streams reported, in order.
var healthStreams = []string{streams.Sessions, streams.Work, streams.Output, "KV_" + streams.Agents, "KV_" + streams.Keypairs}

func (s *Service) handleHealth(req micro.Request) {
	s.adminOp(req, func(ctx context.Context, _ string) (any, error) { return s.health(ctx) })
}

func (s *Service) health(ctx context.Context) (*events.HealthResponse, error) {
	resp := &events.HealthResponse{Problems: []string{}, Services: []events.ServiceHealth{}, Agents: []events.AgentHealth{},
		Streams: []events.StreamHealth{}, Time: time.Now().UTC()}
	stats, err := s.microStats(ctx)
	if err != nil {
		return nil, events.Errorf(events.ErrBusy, "cannot ask the services now (%v); retry", err)
	}
	seen := map[string]int{}
	answered := map[string]bool{} // agent ids
	var applied []uint64          // registries' applied sequences
	for _, st := range stats {
		sh := events.ServiceHealth{Name: st.Name, ID: st.ID, Version: st.Version, State: events.HealthOK, Started: st.Started}
		for _, ep := range st.Endpoints {
			sh.Requests += ep.NumRequests
			sh.Errors += ep.NumErrors
			if sh.Status == nil && len(ep.Data) > 0 {
				var m map[string]string
				if json.Unmarshal(ep.Data, &m) == nil && len(m) > 0 {
					sh.Status = m
				}
			}
		}
		seen[st.Name]++
		if st.Name == "bai-agent" {
			answered[st.Metadata["agent_id"]] = true
		}
		if st.Name == "bai-registry" && sh.Status != nil {
			if n, err := strconv.ParseUint(sh.Status["applied_seq"], 10, 64); err == nil {
				applied = append(applied, n)
			}
		}
		resp.Services = append(resp.Services, sh)
	}
	slices.SortFunc(resp.Services, func(a, b events.ServiceHealth) int {
		return cmp.Or(strings.Compare(a.Name, b.Name), strings.Compare(a.ID, b.ID))
	})
	for _, name := range healthRequired {
		if seen[name] == 0 {
			resp.Problems = append(resp.Problems, fmt.Sprintf("no %s answered", name))
		}
	}

	agents, err := s.agentList(ctx)
	if err != nil {
		resp.Problems = append(resp.Problems, fmt.Sprintf("agents bucket unreadable: %v", err))
	} else {
		for _, a := range agents.Agents {
			ah := events.AgentHealth{ID: a.ID, State: a.State, HeartbeatAge: a.HeartbeatAge, Answered: answered[a.ID]}
			resp.Agents = append(resp.Agents, ah)
			switch {
			case a.State == events.AgentLost || a.State == events.AgentSilent:
				resp.Problems = append(resp.Problems, fmt.Sprintf("agent %s is %s (last heartbeat %.0fs ago)", a.ID, a.State, a.HeartbeatAge))
			case !ah.Answered:
				resp.Problems = append(resp.Problems, fmt.Sprintf("agent %s did not answer the ping", a.ID))
			}
		}
	}

	for _, name := range healthStreams {
		sh := s.streamHealth(ctx, name)
		if name == streams.Sessions && sh.State == events.HealthOK {
			// The registry's lag behind the log, in its stats.
			for _, a := range applied {
				if last := sh.lastSeq; a+registryLagWarn < last {
					resp.Problems = append(resp.Problems, fmt.Sprintf("a registry is %d events behind the session log", last-a))
				}
			}
		}
		if sh.State != events.HealthOK {
			resp.Problems = append(resp.Problems, fmt.Sprintf("stream %s is %s: %s", name, sh.State, sh.Error))
		}
		resp.Streams = append(resp.Streams, sh.StreamHealth)
	}
	resp.Healthy = len(resp.Problems) == 0
	return resp, nil
}

// registryLagWarn is how far behind the log a registry may be before it
// is a problem (it applies in batches: a few events is normal under load).
const registryLagWarn = 1000

// microStats publishes $SRV.STATS on a fresh health inbox and gathers
// the answers.
func (s *Service) microStats(ctx context.Context) ([]micro.Stats, error) {
	inbox := events.HealthInboxPrefix + "." + nuid.Next()
	ch := make(chan *nats.Msg, 256)
	sub, err := s.cfg.NC.ChanSubscribe(inbox, ch)
	if err != nil {
		return nil, err
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := s.cfg.NC.PublishRequest("$SRV.STATS", inbox, nil); err != nil {
		return nil, err
	}
	var out []micro.Stats
	all := time.NewTimer(healthWait)
	defer all.Stop()
	quiet := time.NewTimer(healthWait)
	defer quiet.Stop()
	for {
		select {
		case m := <-ch:
			var st micro.Stats
			if json.Unmarshal(m.Data, &st) == nil && st.Name != "" {
				out = append(out, st)
			}
			quiet.Reset(healthQuiet)
		case <-quiet.C:
			return out, nil
		case <-all.C:
			return out, nil
		case <-ctx.Done():
			return out, nil
		}
	}
}

type streamHealth struct {
	events.StreamHealth
	lastSeq uint64
}

// streamHealth is one stream's state: ok, degraded (a replica behind or
// not current), down (no leader, or unreadable).
func (s *Service) streamHealth(ctx context.Context, name string) streamHealth {
	sh := streamHealth{StreamHealth: events.StreamHealth{Name: name, State: events.HealthOK}}
	ictx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	st, err := s.js.Stream(ictx, name)
	var info *jetstream.StreamInfo
	if err == nil {
		info, err = st.Info(ictx)
	}
	if err != nil {
		sh.State, sh.Error = events.HealthDown, err.Error()
		return sh
	}
	sh.Messages, sh.Bytes, sh.Replicas, sh.lastSeq = info.State.Msgs, info.State.Bytes, info.Config.Replicas, info.State.LastSeq
	if c := info.Cluster; c != nil {
		sh.Leader = c.Leader
		if c.Name != "" && c.Leader == "" {
			sh.State, sh.Error = events.HealthDown, "no leader"
		}
		for _, r := range c.Replicas {
			sh.Lag = max(sh.Lag, r.Lag)
			if (!r.Current || r.Offline) && sh.State == events.HealthOK {
				sh.State, sh.Error = events.HealthDegraded, fmt.Sprintf("replica %s is not current", r.Name)
			}
		}
	}
	return sh
}
