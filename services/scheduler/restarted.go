package scheduler

import (
	"fmt"
	"time"

	"github.com/bai-sh/bai/pkg/events"
)

// checkRestarted sends a kernel_check to each live agent about every
// session placed on it that it has not spoken of, nor been asked about,
// under its current epoch: the agent came back (a restart bumps the
// epoch) and may have lost its state, so that it killed the session's
// kernel as an orphan or never saw it again. The check goes on the
// agent's work subject after everything placed there before, and the
// agent ends the session (kernel-lost) when it has no record of the
// kernel; a kernel it adopted or started stays. The check's own epoch
// marks the session asked, also for a scheduler that takes over later.
func (s *Service) checkRestarted(p *plan, now time.Time) {
	budget := maxChecksPerTick
	var list []*order
	for _, sess := range s.st.sessions {
		if !sess.status.HoldsCapacity() || sess.agentID == "" || sess.epoch == 0 {
			continue
		}
		a := s.st.agents[sess.agentID]
		if a == nil || a.info.Epoch == 0 || a.info.Epoch == sess.epoch || !a.live(now, s.cfg.AgentTimeout) {
			continue
		}
		ev := s.event(sess, events.EventKernelCheck)
		ev.ID = fmt.Sprintf("check-%s-%s-%s-%d", sess.spec.AccessKey, sess.spec.ID, a.id, a.info.Epoch)
		ev.AgentID, ev.AgentEpoch = a.id, a.info.Epoch
		ev.Message = fmt.Sprintf("agent %s is at epoch %d, the kernel was last heard of at epoch %d", a.id, a.info.Epoch, sess.epoch)
		epoch := a.info.Epoch
		// Sent in order; one not stored stops the rest until the next tick.
		list = append(list, &order{ev: ev, done: func() { sess.epoch = epoch }})
		if budget--; budget == 0 {
			break // the rest next tick: a round is not held up by them
		}
	}
	if len(list) > 0 {
		p.orders = append(p.orders, list)
	}
}

// maxChecksPerTick bounds the kernel checks one tick sends (each is a
// publish the submitter waits for).
const maxChecksPerTick = 256
