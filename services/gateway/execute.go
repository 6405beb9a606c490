package gateway

import (
	"context"
	"errors"
	"sync"
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

// lastOfEach is lastOf of each subject, all at once: found[i] and errs[i]
// are subjects[i]'s.
func (s *Service) lastOfEach(ctx context.Context, subjects []string) (found []*events.Event, errs []error) {
	found, errs = make([]*events.Event, len(subjects)), make([]error, len(subjects))
	var wg sync.WaitGroup
	for i, subj := range subjects {
		wg.Go(func() { found[i], errs[i] = s.lastOf(ctx, subj) })
	}
	wg.Wait()
	return found, errs
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
	// The session's events, looked up at once: each is a round trip to
	// the stream, and the execution cannot start before the request that
	// follows them is stored.
	base := "bai.session." + ak + "." + er.SessionID + "."
	ending := []events.Name{events.EventTerminateRequest, events.EventTerminated, events.EventCancelled, events.EventError}
	subjects := []string{base + string(events.EventEnqueued), base + string(events.EventStarted), base + string(events.EventScheduled) + ".*"}
	for _, name := range ending {
		subjects = append(subjects, base+string(name)+".>", base+string(name))
	}
	found, errs := s.lastOfEach(ctx, subjects)
	enq, started, sched := found[0], found[1], found[2]
	if errs[0] != nil {
		return nil, events.Errorf(events.ErrInternal, "could not look up session %q: %v", er.SessionID, errs[0])
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
	for i, name := range ending {
		if found[3+2*i] != nil || found[4+2*i] != nil {
			return nil, events.Errorf(events.ErrConflict, "session %s is ending (%s)", er.SessionID, name)
		}
	}
	if errs[1] != nil {
		return nil, events.Errorf(events.ErrInternal, "could not look up session %q: %v", er.SessionID, errs[1])
	}
	if started == nil {
		return nil, events.Errorf(events.ErrConflict, "session %s is not running yet", er.SessionID)
	}
	if errs[2] != nil || sched == nil {
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
