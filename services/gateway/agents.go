package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"

	"github.com/bai-sh/bai/pkg/events"
	"github.com/bai-sh/bai/pkg/events/streams"
)

// Agent administration (admins only): agent.list reads the heartbeats and
// drain keys of the agents bucket and asks the leading scheduler for its
// ledger (used slots, sessions, lost); agent.drain and agent.undrain put
// and delete an agent's drain key, which the scheduler watches.

// ledgerWait bounds the wait for the scheduler's view in agent.list.
const ledgerWait = 2 * time.Second

func (s *Service) handleAgentList(req micro.Request) {
	s.adminOp(req, func(ctx context.Context, _ string) (any, error) { return s.agentList(ctx) })
}

func (s *Service) handleAgentDrain(req micro.Request) {
	s.adminOp(req, func(ctx context.Context, ak string) (any, error) { return s.agentDrain(ctx, ak, req.Data(), true) })
}

func (s *Service) handleAgentUndrain(req micro.Request) {
	s.adminOp(req, func(ctx context.Context, ak string) (any, error) { return s.agentDrain(ctx, ak, req.Data(), false) })
}

// adminOp answers req with f's result when the caller is an admin.
func (s *Service) adminOp(req micro.Request, f func(ctx context.Context, ak string) (any, error)) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ak, err := callerKey(req)
	if err != nil {
		respond(req, nil, err)
		return
	}
	if !s.isAdmin(ak) {
		s.log.Warn().Str("access_key", ak).Str("subject", req.Subject()).Msg("admin_denied")
		respond(req, nil, events.Errorf(events.ErrForbidden, "access key %s is not an admin: this needs an admin keypair", ak))
		return
	}
	resp, err := f(ctx, ak)
	if err == nil {
		s.log.Info().Str("access_key", ak).Str("subject", req.Subject()).Msg("admin_op")
	}
	respond(req, resp, err)
}

func (s *Service) agentsBucket(ctx context.Context) (jetstream.KeyValue, error) {
	kv, err := s.js.KeyValue(ctx, streams.Agents)
	if err != nil {
		return nil, events.Errorf(events.ErrBusy, "cannot read the agents bucket now (%v); retry", err)
	}
	return kv, nil
}

func (s *Service) agentList(ctx context.Context) (*events.AgentListResponse, error) {
	kv, err := s.agentsBucket(ctx)
	if err != nil {
		return nil, err
	}
	w, err := kv.WatchAll(ctx, jetstream.IgnoreDeletes())
	if err != nil {
		return nil, events.Errorf(events.ErrBusy, "cannot list the agents now (%v); retry", err)
	}
	defer func() { _ = w.Stop() }()
	heartbeats := map[string]*events.AgentInfo{}
	drains := map[string]events.DrainRecord{}
	for e := range w.Updates() {
		if e == nil {
			break // the current values are in
		}
		if id, ok := events.DrainedAgent(e.Key()); ok {
			var d events.DrainRecord
			_ = json.Unmarshal(e.Value(), &d)
			drains[id] = d
			continue
		}
		var a events.AgentInfo
		if json.Unmarshal(e.Value(), &a) == nil && a.ID == e.Key() {
			heartbeats[a.ID] = &a
		}
	}
	resp := &events.AgentListResponse{Agents: []events.AgentStatus{}}
	var view events.SchedulerAgents
	if msg, err := s.cfg.NC.Request(events.SchedulerAgentsSubject, nil, ledgerWait); err == nil && json.Unmarshal(msg.Data, &view) == nil {
		resp.Ledger = true
	}
	now := time.Now()
	for id, a := range heartbeats {
		st := events.AgentStatus{
			ID: id, Host: a.Host, Runtime: a.Runtime, ScalingGroup: a.ScalingGroup, Capacity: a.Capacity,
			Heartbeat: a.Heartbeat, HeartbeatAge: now.Sub(a.Heartbeat).Seconds(),
		}
		if d, ok := drains[id]; ok {
			at := d.At
			st.Drained, st.DrainedAt, st.DrainedBy = true, &at, d.By
		}
		v, known := view.Agents[id]
		if resp.Ledger {
			st.Used, st.Sessions = v.Used, v.Sessions
			if st.Used == nil {
				st.Used = map[string]string{}
			}
		}
		st.State = agentState(st, v, resp.Ledger && known)
		resp.Agents = append(resp.Agents, st)
	}
	slices.SortFunc(resp.Agents, func(a, b events.AgentStatus) int { return strings.Compare(a.ID, b.ID) })
	return resp, nil
}

// agentState names an agent's state; v is the scheduler's view when
// known.
func agentState(st events.AgentStatus, v events.SchedulerAgent, known bool) string {
	switch {
	case known && v.Lost:
		return events.AgentLost
	case known && !v.Live:
		return events.AgentSilent
	case st.Drained && known && st.Sessions == 0:
		return events.AgentDrained
	case st.Drained:
		return events.AgentDraining
	}
	return events.AgentReady
}

// agentDrain drains (or undrains) the agent the request names and
// answers its status; an unknown agent is ErrNotFound.
func (s *Service) agentDrain(ctx context.Context, ak string, data []byte, drain bool) (*events.AgentStatus, error) {
	var r events.AgentRequest
	if err := json.Unmarshal(data, &r); err != nil {
		return nil, events.Errorf(events.ErrInvalid, "malformed agent request: %v", err)
	}
	if !events.ValidToken(r.ID) {
		return nil, events.Errorf(events.ErrInvalid, "invalid agent id %q", clip(r.ID))
	}
	kv, err := s.agentsBucket(ctx)
	if err != nil {
		return nil, err
	}
	if _, err := kv.Get(ctx, r.ID); errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
		return nil, events.Errorf(events.ErrNotFound, "unknown agent %q (bai admin agent list shows the agents)", clip(r.ID))
	} else if err != nil {
		return nil, events.Errorf(events.ErrBusy, "cannot read the agents bucket now (%v); retry", err)
	}
	if drain {
		v, _ := json.Marshal(events.DrainRecord{By: ak, At: time.Now().UTC()})
		if _, err := kv.Put(ctx, events.DrainKey(r.ID), v); err != nil {
			return nil, events.Errorf(events.ErrInternal, "could not store the drain: %v", err)
		}
	} else if err := kv.Delete(ctx, events.DrainKey(r.ID)); err != nil {
		return nil, events.Errorf(events.ErrInternal, "could not remove the drain: %v", err)
	}
	list, err := s.agentList(ctx)
	if err != nil {
		return nil, err
	}
	for _, a := range list.Agents {
		if a.ID == r.ID {
			return &a, nil
		}
	}
	return nil, events.Errorf(events.ErrNotFound, "agent %q went away", r.ID)
}
