package gateway

import (
	"context"
	"errors"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"

	"github.com/bai-sh/bai/pkg/events"
)

func (s *Service) handleExecute(req micro.Request) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := s.execute(ctx, req)
	respond(req, resp, err)
}

// lastOf returns the last event on subject (wildcards allowed), or nil.
func (s *Service) lastOf(ctx context.Context, subj string) (*events.Event, error) {
	raw, err := s.stream.GetLastMsgForSubject(ctx, subj)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return events.Decode(raw.Subject, raw.Data)
}

// execute publishes session_execute_request to the agent of a running
// session: the agent is the one its session_scheduled was addressed to.
func (s *Service) execute(ctx context.Context, req micro.Request) (*events.ExecuteResponse, error) {
	ak, err := callerKey(req)
	if err != nil {
		return nil, err
	}
	var er events.ExecuteRequest
	if !utf8.Valid(req.Data()) {
		// The decoder would turn a bad byte of a file name into U+FFFD.
		return nil, events.Errorf(events.ErrInvalid, "malformed execute request: not UTF-8")
	}
	if err := events.Unmarshal(req.Data(), &er); err != nil {
		return nil, events.Errorf(events.ErrInvalid, "malformed execute request: %v", err)
	}
	if !events.ValidToken(er.SessionID) {
		return nil, events.Errorf(events.ErrInvalid, "invalid session id %q", clip(er.SessionID))
	}
	if err := checkRun(&er.Run); err != nil {
		return nil, err
	}
	if err := s.checkFiles(ctx, ak, er.SessionID, &er.Run); err != nil {
		return nil, err
	}
	base := "bai.session." + ak + "." + er.SessionID + "."
	enq, err := s.lastOf(ctx, base+string(events.EventEnqueued))
	if err != nil {
		return nil, events.Errorf(events.ErrInternal, "could not look up session %q: %v", er.SessionID, err)
	}
	if enq == nil {
		return nil, events.Errorf(events.ErrNotFound, "session %q not found", er.SessionID)
	}
	if er.Image != "" {
		image, err := s.resolveImage(er.Image)
		if err != nil {
			return nil, err
		}
		if image != enq.Session.Image {
			return nil, events.Errorf(events.ErrConflict, "session %s runs %s, not %s", enq.Session.Name, enq.Session.Image, image)
		}
	}
	for _, name := range []events.Name{events.EventTerminateRequest, events.EventTerminated, events.EventCancelled, events.EventError} {
		if ev, err := s.lastOf(ctx, base+string(name)+".>"); err == nil && ev != nil {
			return nil, events.Errorf(events.ErrConflict, "session %s is ending (%s)", er.SessionID, name)
		}
		if ev, err := s.lastOf(ctx, base+string(name)); err == nil && ev != nil {
			return nil, events.Errorf(events.ErrConflict, "session %s is ending (%s)", er.SessionID, name)
		}
	}
	started, err := s.lastOf(ctx, base+string(events.EventStarted))
	if err != nil {
		return nil, events.Errorf(events.ErrInternal, "could not look up session %q: %v", er.SessionID, err)
	}
	if started == nil {
		return nil, events.Errorf(events.ErrConflict, "session %s is not running yet", er.SessionID)
	}
	sched, err := s.lastOf(ctx, base+string(events.EventScheduled)+".*")
	if err != nil || sched == nil {
		return nil, events.Errorf(events.ErrInternal, "could not find the agent of session %q", er.SessionID)
	}
	run := er.Run
	ev := &events.Event{
		V: events.Version, ID: "exec-" + ak + "-" + er.SessionID + "-" + run.ID, Name: events.EventExecuteRequest,
		Time: time.Now().UTC(), AccessKey: ak, SessionID: er.SessionID, KernelID: enq.KernelID,
		AgentID: sched.AgentID, Run: &run,
	}
	if _, err := s.publish(ctx, ev, ev.ID, false); err != nil {
		return nil, publishError(err, "could not request execution")
	}
	return &events.ExecuteResponse{SessionID: er.SessionID, RunID: run.ID, AgentID: sched.AgentID}, nil
}
