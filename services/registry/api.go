package registry

import (
	"fmt"
	"slices"
	"time"

	"github.com/nats-io/nats.go/micro"

	"github.com/bai-sh/bai/pkg/events"
)

// List limits.
const (
	DefaultListLimit = 10
	MaxListLimit     = 1000
	// catchUpWait bounds how long a query waits for the projection to
	// reach the end of the log.
	catchUpWait = 2 * time.Second
)

// handler adapts an API function to micro: it takes the caller's access
// key from the subject, answers the result as JSON or the error with its
// code (and a JSON body: no answer is empty). A request whose reply
// subject is not its requester's own inbox (events.RequestReplyAllowed)
// is refused first, without publishing anything.
func (s *Service) handler(h func(ak string, data []byte) (any, error)) micro.HandlerFunc {
	return func(req micro.Request) {
		ak, ok := events.RequestReplyAllowed(req.Subject(), req.Reply())
		if !ok {
			s.log.Warn().Str("subject", clip(req.Subject())).Str("reply", clip(req.Reply())).Str("access_key", ak).
				Msg("reply_subject_refused")
			return
		}
		resp, err := h(ak, req.Data())
		if err == nil {
			err = req.RespondJSON(resp)
			if err == nil {
				return
			}
			s.log.Warn().Err(err).Str("subject", req.Subject()).Msg("respond")
			err = fmt.Errorf("%w: respond: %v", events.ErrInternal, err)
		}
		code := events.CodeOf(err)
		if rerr := req.Error(code, err.Error(), events.ErrorBody(code, err.Error())); rerr != nil {
			s.log.Warn().Err(rerr).Str("subject", req.Subject()).Msg("respond_error")
		}
	}
}

// clip bounds a client-chosen string in a log line.
func clip(s string) string {
	if len(s) > 80 {
		return s[:80] + "..."
	}
	return s
}

// invalid is a 400 whose description is exactly the message.
func invalid(format string, args ...any) error {
	return &events.APIError{Code: events.CodeInvalid, Description: fmt.Sprintf(format, args...)}
}

func notFound(ref string) error {
	return &events.APIError{Code: events.CodeNotFound, Description: fmt.Sprintf("session %q not found", ref)}
}

// withStore runs f on the open store, or answers busy once it is closed.
func (s *Service) withStore(f func(st *store) (any, error)) (any, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.st == nil {
		return nil, fmt.Errorf("%w: registry is shutting down", events.ErrBusy)
	}
	resp, err := f(s.st)
	if err != nil && events.CodeOf(err) == events.CodeInternal {
		s.log.Error().Err(err).Msg("query")
	}
	return resp, err
}

func decode(what string, data []byte, v any) error {
	if len(data) == 0 {
		return nil
	}
	if err := events.Unmarshal(data, v); err != nil {
		return invalid("malformed %s request: %v", what, err)
	}
	return nil
}

func (s *Service) handleList(ak string, data []byte) (any, error) {
	var req events.ListRequest
	if err := decode("list", data, &req); err != nil {
		return nil, err
	}
	statuses := req.Statuses
	if len(statuses) == 0 {
		statuses = events.DefaultListStatuses
	}
	for _, st := range statuses {
		if !st.Valid() {
			return nil, invalid("unknown status %q", st)
		}
	}
	statuses = slices.Compact(slices.Sorted(slices.Values(statuses)))
	switch {
	case req.Limit < 0:
		return nil, invalid("negative limit %d", req.Limit)
	case req.Limit == 0:
		req.Limit = DefaultListLimit
	case req.Limit > MaxListLimit:
		req.Limit = MaxListLimit
	}
	if req.Offset < 0 {
		return nil, invalid("negative offset %d", req.Offset)
	}
	owner, err := s.owner(ak, req.AccessKey)
	if err != nil {
		return nil, err
	}
	admin := s.isAdminKey(ak)
	s.catchUp(catchUpWait)
	return s.withStore(func(st *store) (any, error) {
		resp, err := st.list(owner, statuses, req.Limit, req.Offset)
		resp.Admin = admin
		return resp, err
	})
}

// isAdminKey is isAdmin where a failed lookup means no.
func (s *Service) isAdminKey(ak string) bool {
	admin, err := s.isAdmin(ak)
	return err == nil && admin
}

// ref decodes a GetRequest from caller ak: the session it names and the
// access key that owns it (ak, or the one an admin asks for).
func (s *Service) ref(ak, what string, data []byte) (ref, owner string, err error) {
	var req events.GetRequest
	if err := decode(what, data, &req); err != nil {
		return "", "", err
	}
	if req.Ref == "" {
		return "", "", invalid("%s request without a session id or name", what)
	}
	if !events.ValidToken(req.Ref) {
		return "", "", invalid("invalid session id or name %q", req.Ref)
	}
	owner, err = s.owner(ak, req.AccessKey)
	if err != nil {
		return "", "", err
	}
	return req.Ref, owner, nil
}

func (s *Service) handleGet(ak string, data []byte) (any, error) {
	ref, ak, err := s.ref(ak, "get", data)
	if err != nil {
		return nil, err
	}
	s.catchUp(catchUpWait)
	return s.withStore(func(st *store) (any, error) {
		info, ok, err := st.get(ak, ref)
		if err == nil && !ok {
			err = notFound(ref)
		}
		return info, err
	})
}

func (s *Service) handleHistory(ak string, data []byte) (any, error) {
	ref, ak, err := s.ref(ak, "history", data)
	if err != nil {
		return nil, err
	}
	s.catchUp(catchUpWait)
	return s.withStore(func(st *store) (any, error) {
		resp, ok, err := st.history(ak, ref)
		if err == nil && !ok {
			err = notFound(ref)
		}
		return resp, err
	})
}
