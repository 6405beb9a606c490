package scheduler

import (
	"fmt"
	"strconv"

	"github.com/nats-io/nats.go/micro"

	"github.com/bai-sh/bai/pkg/events"
)

// MicroName is the scheduler's nats micro service: it answers $SRV.PING,
// INFO and STATS (the gateway's admin.health asks them) and a status
// endpoint, events.MicroStatusSubject(MicroName, instance id).
const MicroName = "bai-scheduler"

// serveMicro starts the micro service; its stats carry status().
func (s *Service) serveMicro() (micro.Service, error) {
	svc, err := micro.AddService(s.cfg.NC, micro.Config{
		Name: MicroName, Version: "0.1.0", Description: "bai scheduler: placement of pending sessions",
		Metadata:     map[string]string{"instance": s.cfg.InstanceID},
		StatsHandler: func(*micro.Endpoint) any { return s.status() },
	})
	if err != nil {
		return nil, fmt.Errorf("scheduler: micro service: %w", err)
	}
	h := func(req micro.Request) {
		if !events.HealthReplyAllowed(req.Reply()) {
			s.log.Warn().Str("reply", req.Reply()).Msg("reply_subject_refused")
			return
		}
		_ = req.RespondJSON(s.status())
	}
	if err := svc.AddEndpoint("status", micro.HandlerFunc(h), micro.WithEndpointSubject(events.MicroStatusSubject(MicroName, s.cfg.InstanceID))); err != nil {
		_ = svc.Stop()
		return nil, fmt.Errorf("scheduler: status endpoint: %w", err)
	}
	return svc, nil
}

// status is what the scheduler says of itself: whether it leads, and
// its view's counts.
func (s *Service) status() map[string]string {
	s.mu.Lock()
	pending, agents := len(s.st.pending), len(s.st.agents)
	s.mu.Unlock()
	return map[string]string{
		"instance": s.cfg.InstanceID,
		"leader":   strconv.FormatBool(s.leading.Load()),
		"pending":  strconv.Itoa(pending),
		"agents":   strconv.Itoa(agents),
		"placed":   strconv.FormatInt(s.placed.Load(), 10),
	}
}
