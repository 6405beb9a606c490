package gateway

import (
	"context"
	"errors"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/bai-sh/bai/pkg/events"
)

// Files out (bai download, bai ls). The gateway admits the request (the
// path by events.CheckFilePath, the session the caller's own or, for an
// admin, another key's), finds the session's agent and kernel in the log
// (its session_scheduled) and asks that agent on
// events.AgentFilesSubject, which only the gateway may publish. The
// agent's answer is checked (one chunk at most, the path asked, entries
// that are single names) before it is passed on: the agent, and the
// kernel whose files these are, are not trusted to name what the client
// writes. Nothing is stored; each request carries at most one chunk.

// maxFileOps bounds the file requests the gateway handles at once (each
// holds at most one chunk, about 2 MiB with its encodings); beyond it a
// request is answered busy, retry.
const maxFileOps = 16

// fileOpTimeout bounds one file request, the agent's answer included.
const fileOpTimeout = 10 * time.Second

func (s *Service) handleDownload(req micro.Request) { s.fileOp(req, s.download) }
func (s *Service) handleFiles(req micro.Request)    { s.fileOp(req, s.files) }

// fileOp runs op on its own goroutine (the endpoint's callback is serial,
// and op waits for an agent), at most maxFileOps at once.
func (s *Service) fileOp(req micro.Request, op func(context.Context, micro.Request) (any, error)) {
	s.fileOnce.Do(func() { s.fileOps = make(chan struct{}, maxFileOps) })
	select {
	case s.fileOps <- struct{}{}:
	default:
		respond(req, nil, events.Errorf(events.ErrBusy, "too many file requests at once; retry"))
		return
	}
	reply := req.Reply()
	s.fileWG.Go(func() {
		defer func() { <-s.fileOps }()
		ctx, cancel := context.WithTimeout(context.Background(), fileOpTimeout)
		defer cancel()
		resp, err := op(ctx, req)
		s.replyTo(reply, resp, err)
	})
}

// download answers one chunk of one file.
func (s *Service) download(ctx context.Context, req micro.Request) (any, error) {
	var dr events.DownloadRequest
	ak, err := decodeFileRequest(req, &dr)
	if err != nil {
		return nil, err
	}
	if err := events.CheckFilePath(dr.Path); err != nil {
		return nil, events.Errorf(events.ErrInvalid, "%s", err)
	}
	if dr.Offset < 0 || dr.Offset > events.MaxDownloadFile {
		return nil, events.Errorf(events.ErrInvalid, "offset %d out of range (0 to %d)", dr.Offset, events.MaxDownloadFile)
	}
	areq, agentID, err := s.fileTarget(ctx, ak, dr.AccessKey, dr.SessionID)
	if err != nil {
		return nil, err
	}
	areq.Path, areq.Offset = dr.Path, dr.Offset
	var resp events.DownloadResponse
	if err := s.askAgent(ctx, agentID, events.AgentFilesRead, areq, &resp); err != nil {
		return nil, err
	}
	n := int64(len(resp.Data))
	if resp.Path != dr.Path || resp.Offset != dr.Offset || n > events.MaxDownloadChunk ||
		resp.Size < 0 || resp.Size > events.MaxDownloadFile || resp.Offset+n > resp.Size || resp.EOF != (resp.Offset+n == resp.Size) {
		s.log.Warn().Str("agent_id", agentID).Str("session_id", dr.SessionID).Msg("agent_file_answer_refused")
		return nil, events.Errorf(events.ErrInternal, "agent %s answered a bad chunk of %s", agentID, clip(dr.Path))
	}
	return &resp, nil
}

// files answers a listing.
func (s *Service) files(ctx context.Context, req micro.Request) (any, error) {
	var fr events.FilesRequest
	ak, err := decodeFileRequest(req, &fr)
	if err != nil {
		return nil, err
	}
	if fr.Path != "" {
		if err := events.CheckFilePath(fr.Path); err != nil {
			return nil, events.Errorf(events.ErrInvalid, "%s", err)
		}
	}
	areq, agentID, err := s.fileTarget(ctx, ak, fr.AccessKey, fr.SessionID)
	if err != nil {
		return nil, err
	}
	areq.Path = fr.Path
	var resp events.FilesResponse
	if err := s.askAgent(ctx, agentID, events.AgentFilesList, areq, &resp); err != nil {
		return nil, err
	}
	bad := len(resp.Files) > events.MaxListEntries || resp.Path != fr.Path
	for _, f := range resp.Files {
		bad = bad || events.CheckFileInfo(f) != nil
	}
	if bad {
		s.log.Warn().Str("agent_id", agentID).Str("session_id", fr.SessionID).Msg("agent_file_answer_refused")
		return nil, events.Errorf(events.ErrInternal, "agent %s answered a bad listing", agentID)
	}
	resp.SessionID = fr.SessionID
	if resp.Files == nil {
		resp.Files = []events.FileInfo{}
	}
	return &resp, nil
}

// decodeFileRequest decodes a file request's body into v and returns the
// caller's key.
func decodeFileRequest(req micro.Request, v any) (string, error) {
	ak, err := callerKey(req)
	if err != nil {
		return "", err
	}
	if !utf8.Valid(req.Data()) {
		// The decoder would turn a bad byte of a path into U+FFFD.
		return "", events.Errorf(events.ErrInvalid, "malformed file request: not UTF-8")
	}
	if err := events.Unmarshal(req.Data(), v); err != nil {
		return "", events.Errorf(events.ErrInvalid, "malformed file request: %v", err)
	}
	return ak, nil
}

// fileTarget finds the agent and kernel of session sid of the caller
// (or, for an admin, of key owner): the agent its session_scheduled
// named. A session of another key is not found.
func (s *Service) fileTarget(ctx context.Context, ak, owner, sid string) (events.AgentFilesRequest, string, error) {
	var none events.AgentFilesRequest
	if !events.ValidToken(sid) {
		return none, "", events.Errorf(events.ErrInvalid, "invalid session id %q", clip(sid))
	}
	if owner != "" && owner != ak {
		if !events.ValidToken(owner) {
			return none, "", events.Errorf(events.ErrInvalid, "invalid access key %q", clip(owner))
		}
		if !s.isAdmin(ak) {
			s.log.Warn().Str("access_key", ak).Str("asked", owner).Msg("other_key_denied")
			return none, "", events.Errorf(events.ErrForbidden, "only an admin may read another access key's session")
		}
		ak = owner
	}
	base := "bai.session." + ak + "." + sid + "."
	sched, err := s.lastOf(ctx, base+string(events.EventScheduled)+".*")
	if err != nil {
		return none, "", events.Errorf(events.ErrInternal, "could not look up session %q: %v", sid, err)
	}
	if sched == nil || !events.ValidToken(sched.AgentID) {
		enq, err := s.lastOf(ctx, base+string(events.EventEnqueued))
		switch {
		case err != nil:
			return none, "", events.Errorf(events.ErrInternal, "could not look up session %q: %v", sid, err)
		case enq == nil:
			return none, "", events.Errorf(events.ErrNotFound, "session %q not found", sid)
		}
		return none, "", events.Errorf(events.ErrConflict, "session %s is not running (no agent holds it)", sid)
	}
	kernel := sched.KernelID
	if kernel == "" && sched.Session != nil {
		kernel = sched.Session.MainKernelID
	}
	return events.AgentFilesRequest{AccessKey: ak, SessionID: sid, KernelID: kernel}, sched.AgentID, nil
}

// askAgent sends a file request to agent id and decodes its answer into
// resp; the agent's error answers keep their code.
func (s *Service) askAgent(ctx context.Context, agentID, verb string, req events.AgentFilesRequest, resp any) error {
	subj, err := events.AgentFilesSubject(agentID, verb)
	if err != nil {
		return events.Errorf(events.ErrInternal, "%v", err)
	}
	data, err := events.Marshal(req)
	if err != nil {
		return events.Errorf(events.ErrInternal, "%v", err)
	}
	msg, err := s.cfg.NC.RequestWithContext(ctx, subj, data)
	switch {
	case errors.Is(err, nats.ErrNoResponders):
		return events.Errorf(events.ErrBusy, "agent %s of session %s is not answering (down or restarting); retry", agentID, req.SessionID)
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, nats.ErrTimeout):
		return events.Errorf(events.ErrBusy, "agent %s of session %s did not answer in time; retry", agentID, req.SessionID)
	case err != nil:
		return events.Errorf(events.ErrInternal, "ask agent %s: %v", agentID, err)
	}
	if aerr := events.ErrorFromHeader(map[string][]string(msg.Header)); aerr != nil {
		var ae *events.APIError
		if errors.As(aerr, &ae) {
			return events.Errorf(codeSentinel(ae.Code), "%s", clipLong(ae.Description))
		}
		return aerr
	}
	if err := events.Unmarshal(msg.Data, resp); err != nil {
		return events.Errorf(events.ErrInternal, "agent %s answered: %v", agentID, err)
	}
	return nil
}

// codeSentinel is the sentinel of an agent's error code, one of ours:
// an agent cannot make the gateway answer a code it does not know.
func codeSentinel(code string) error {
	for _, e := range []error{events.ErrInvalid, events.ErrForbidden, events.ErrNotFound, events.ErrConflict, events.ErrBusy} {
		if events.CodeOf(e) == code {
			return e
		}
	}
	return events.ErrInternal
}

// clipLong cuts an agent's error text to 512 bytes.
func clipLong(s string) string {
	if len(s) > 512 {
		return s[:512] + "..."
	}
	return s
}
