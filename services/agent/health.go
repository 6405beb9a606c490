package agent

import (
	"fmt"
	"strconv"

	"github.com/nats-io/nats.go/micro"

	"github.com/bai-sh/bai/pkg/events"
)

// MicroName is the agents' nats micro service: each agent answers
// $SRV.PING, INFO and STATS (the gateway's admin.health asks them) and a
// status endpoint, events.MicroStatusSubject(MicroName, agent id). Its
// answers go to a health inbox only (events.HealthReplyAllowed).
const MicroName = "bai-agent"

// serveMicro starts the agent's micro service; its stats carry status().
func (s *Service) serveMicro() (micro.Service, error) {
	svc, err := micro.AddService(s.cfg.NC, micro.Config{
		Name: MicroName, Version: "0.1.0", Description: "bai agent: runs the kernels placed on this host",
		Metadata:     map[string]string{"agent_id": s.id},
		StatsHandler: func(*micro.Endpoint) any { return s.status() },
	})
	if err != nil {
		return nil, fmt.Errorf("agent micro service: %w", err)
	}
	h := func(req micro.Request) {
		if !events.HealthReplyAllowed(req.Reply()) {
			s.log.Warn().Str("reply", req.Reply()).Msg("reply_subject_refused")
			return
		}
		_ = req.RespondJSON(s.status())
	}
	if err := svc.AddEndpoint("status", micro.HandlerFunc(h), micro.WithEndpointSubject(events.MicroStatusSubject(MicroName, s.id))); err != nil {
		_ = svc.Stop()
		return nil, fmt.Errorf("agent status endpoint: %w", err)
	}
	return svc, nil
}

// status is what the agent says of itself.
func (s *Service) status() map[string]string {
	s.mu.Lock()
	kernels := len(s.kernels)
	s.mu.Unlock()
	return map[string]string{
		"agent_id": s.id,
		"epoch":    strconv.FormatUint(s.epoch, 10),
		"runtime":  s.rt.Name(),
		"kernels":  strconv.Itoa(kernels),
	}
}
