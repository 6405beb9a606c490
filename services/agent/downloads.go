package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/nats-io/nats.go"

	"github.com/bai-sh/bai/pkg/events"
	"github.com/bai-sh/bai/services/agent/internal/safefs"
)

// Files out (bai download, bai ls): the gateway asks this agent with a
// core NATS request on events.AgentFilesSubject(id, verb), which only the
// gateway may publish; the agent answers on the gateway's inbox only
// (events.AgentReplyAllowed). Each request reads at most one chunk
// (events.MaxDownloadChunk) or one listing (events.MaxListEntries), from
// the work directory of a running kernel of the session named, through
// safefs: a symlink anywhere in the path is refused, never followed; a
// listing shows it as itself. Requests are handled one at a time, so a
// download holds at most one chunk in the agent's memory.

// fileReader is a runtime whose kernels have a work directory on this host
// that the agent reads (the process runtime). The docker and sim runtimes
// are not: their sessions answer a clear error.
type fileReader interface {
	OpenWorkDir(kernelID string) (*safefs.Root, error)
}

// OpenWorkDir opens a kernel's work directory for safefs reads.
func (r *ProcessRuntime) OpenWorkDir(kernelID string) (*safefs.Root, error) {
	dir, err := r.WorkDir(kernelID)
	if err != nil {
		return nil, err
	}
	root, err := safefs.Open(dir)
	if err != nil {
		return nil, fmt.Errorf("work dir of kernel %s: %w", kernelID, errors.Unwrap(err))
	}
	return root, nil
}

// filesQueue bounds the file requests waiting for the agent; beyond it
// NATS drops them and the gateway's request times out (it answers busy).
const filesQueue = 64

// serveFiles subscribes to the gateway's file requests for this agent and
// handles them on a goroutine of wg until ctx ends.
func (s *Service) serveFiles(ctx context.Context, wg *sync.WaitGroup) error {
	ch := make(chan *nats.Msg, filesQueue)
	var subs []*nats.Subscription
	for _, verb := range []string{events.AgentFilesRead, events.AgentFilesList} {
		subj, err := events.AgentFilesSubject(s.id, verb)
		if err != nil {
			return err
		}
		sub, err := s.cfg.NC.ChanSubscribe(subj, ch)
		if err != nil {
			return fmt.Errorf("subscribe to file requests: %w", err)
		}
		subs = append(subs, sub)
	}
	wg.Go(func() {
		defer func() {
			for _, sub := range subs {
				_ = sub.Unsubscribe()
			}
		}()
		for {
			select {
			case <-ctx.Done():
				return
			case msg := <-ch:
				s.answerFiles(msg)
			}
		}
	})
	return nil
}

// answerFiles answers one file request, on the gateway's inbox only.
func (s *Service) answerFiles(msg *nats.Msg) {
	if !events.AgentReplyAllowed(msg.Reply) {
		s.log.Warn().Str("subject", msg.Subject).Str("reply", clipText(msg.Reply)).Msg("file_request_reply_refused")
		return
	}
	var (
		resp any
		err  error
	)
	var req events.AgentFilesRequest
	if err = events.Unmarshal(msg.Data, &req); err != nil {
		err = events.Errorf(events.ErrInvalid, "malformed file request: %v", err)
	} else if strings.HasSuffix(msg.Subject, "."+events.AgentFilesList) {
		resp, err = s.listFiles(&req)
	} else {
		resp, err = s.readFile(&req)
	}
	out := &nats.Msg{Subject: msg.Reply, Header: nats.Header{}}
	if err == nil {
		out.Data, err = events.Marshal(resp)
	}
	if err != nil {
		code := events.CodeOf(err)
		out.Header.Set(events.HeaderError, err.Error())
		out.Header.Set(events.HeaderErrorCode, code)
		out.Data = events.ErrorBody(code, err.Error())
	}
	if err := s.cfg.NC.PublishMsg(out); err != nil {
		s.log.Warn().Err(err).Msg("file_reply_failed")
	}
}

// workRoot opens the work directory of the running kernel req names: a
// kernel of this agent, of that key's session, not terminating.
func (s *Service) workRoot(req *events.AgentFilesRequest) (*safefs.Root, error) {
	if !events.ValidToken(req.AccessKey) || !events.ValidToken(req.SessionID) {
		return nil, events.Errorf(events.ErrInvalid, "invalid access key or session id")
	}
	s.mu.Lock()
	k := s.bySession[sessionKey(req.AccessKey, req.SessionID)]
	s.mu.Unlock()
	if k == nil || (req.KernelID != "" && k.spec.MainKernelID != req.KernelID) {
		return nil, events.Errorf(events.ErrConflict, "session %s is not running on agent %s", req.SessionID, s.id)
	}
	if !k.phase().takesRuns() {
		return nil, events.Errorf(events.ErrConflict, "session %s is not running", req.SessionID)
	}
	fr, ok := s.rt.(fileReader)
	if !ok {
		return nil, events.Errorf(events.ErrConflict, "the %s runtime keeps no work directory the agent reads: bai download and bai ls need the process runtime", s.rt.Name())
	}
	root, err := fr.OpenWorkDir(k.spec.MainKernelID)
	if err != nil {
		return nil, events.Errorf(events.ErrInternal, "session %s: %v", req.SessionID, err)
	}
	return root, nil
}

// readFile reads one chunk of a regular file, from req.Offset on.
func (s *Service) readFile(req *events.AgentFilesRequest) (*events.DownloadResponse, error) {
	if err := events.CheckFilePath(req.Path); err != nil {
		return nil, events.Errorf(events.ErrInvalid, "%s", err)
	}
	if req.Offset < 0 || req.Offset > events.MaxDownloadFile {
		return nil, events.Errorf(events.ErrInvalid, "offset %d out of range", req.Offset)
	}
	root, err := s.workRoot(req)
	if err != nil {
		return nil, err
	}
	defer root.Close()
	f, err := root.OpenFile(req.Path)
	if err != nil {
		return nil, fileErr(req.Path, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, events.Errorf(events.ErrInternal, "%s: %v", req.Path, err)
	}
	size := fi.Size()
	switch {
	case size > events.MaxDownloadFile:
		return nil, events.Errorf(events.ErrInvalid, "%s is %d bytes: too large to download (at most %d, 64 MiB)", req.Path, size, events.MaxDownloadFile)
	case req.Offset > size:
		return nil, events.Errorf(events.ErrConflict, "%s is %d bytes now, shorter than offset %d (it changed while downloading)", req.Path, size, req.Offset)
	}
	buf := make([]byte, min(size-req.Offset, events.MaxDownloadChunk))
	n, err := f.ReadAt(buf, req.Offset)
	if err != nil && err != io.EOF {
		return nil, events.Errorf(events.ErrInternal, "read %s: %v", req.Path, err)
	}
	return &events.DownloadResponse{
		Path: req.Path, Size: size, Mode: fmt.Sprintf("%04o", fi.Mode().Perm()), MTime: fi.ModTime().UTC(),
		Offset: req.Offset, Data: buf[:n], EOF: req.Offset+int64(n) >= size,
	}, nil
}

// listFiles lists a directory ("" the work directory), or describes the
// one file or symlink req.Path names.
func (s *Service) listFiles(req *events.AgentFilesRequest) (*events.FilesResponse, error) {
	if req.Path != "" {
		if err := events.CheckFilePath(req.Path); err != nil {
			return nil, events.Errorf(events.ErrInvalid, "%s", err)
		}
	}
	root, err := s.workRoot(req)
	if err != nil {
		return nil, err
	}
	defer root.Close()
	resp := &events.FilesResponse{SessionID: req.SessionID, Path: req.Path, Files: []events.FileInfo{}}
	var ents []safefs.Entry
	e, err := root.Lstat(req.Path)
	switch {
	case err != nil:
		return nil, fileErr(req.Path, err)
	case e.Mode.IsDir():
		ents, resp.Truncated, err = root.ReadDir(req.Path, events.MaxListEntries)
		if err != nil {
			return nil, fileErr(req.Path, err)
		}
	default:
		ents = []safefs.Entry{e}
	}
	for _, e := range ents {
		fi := events.FileInfo{
			Name: shown(e.Name, events.MaxUploadName), Type: events.FileType(e.Mode), Size: e.Size,
			Mode: lsMode(e.Mode), MTime: e.ModTime, Target: shown(e.Target, events.MaxLinkTarget),
		}
		resp.Files = append(resp.Files, fi)
	}
	return resp, nil
}

// fileErr is the API error of a refused or failed safefs call, naming the
// path in the work directory (never the host path).
func fileErr(rel string, err error) error {
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return events.Errorf(events.ErrNotFound, "%s: no such file or directory in the work directory", rel)
	case errors.Is(err, safefs.ErrSymlink):
		return events.Errorf(events.ErrInvalid, "%s: refused: a symlink is in the path (bai ls shows it; symlinks are never followed)", rel)
	case errors.Is(err, safefs.ErrNotRegular):
		return events.Errorf(events.ErrInvalid, "%s: refused: not a regular file (directories: bai ls, then their files)", rel)
	case errors.Is(err, safefs.ErrNotDir):
		return events.Errorf(events.ErrInvalid, "%s: refused: a file where a directory is needed", rel)
	case errors.Is(err, safefs.ErrMount):
		return events.Errorf(events.ErrInvalid, "%s: refused: a mount point is in the path", rel)
	case errors.Is(err, safefs.ErrPath):
		return events.Errorf(events.ErrInvalid, "%s: not a relative, clean path", rel)
	case errors.Is(err, fs.ErrPermission):
		return events.Errorf(events.ErrForbidden, "%s: permission denied", rel)
	}
	var pe *fs.PathError
	if errors.As(err, &pe) {
		err = pe.Err // without the host path
	}
	return events.Errorf(events.ErrInternal, "%s: %v", rel, err)
}

// lsMode is a mode as ls -l writes it: the type letter, then the
// permission bits ("lrwxrwxrwx", "prw-r--r--").
func lsMode(m fs.FileMode) string {
	t := "-"
	switch {
	case m.IsDir():
		t = "d"
	case m&fs.ModeSymlink != 0:
		t = "l"
	case m&fs.ModeNamedPipe != 0:
		t = "p"
	case m&fs.ModeSocket != 0:
		t = "s"
	case m&fs.ModeCharDevice != 0:
		t = "c"
	case m&fs.ModeDevice != 0:
		t = "b"
	}
	return t + m.Perm().String()[1:]
}

// shown is a name as a listing shows it: bytes that are not UTF-8 made
// U+FFFD (the JSON encoder would do it anyway), cut to max bytes at a
// character boundary, "..." marking a cut.
func shown(name string, max int) string {
	name = strings.ToValidUTF8(name, "\uFFFD")
	if len(name) <= max {
		return name
	}
	cut := max - 3
	for cut > 0 && !utf8.RuneStart(name[cut]) {
		cut--
	}
	return name[:cut] + "..."
}

// clipText cuts a string from a request for a log line.
func clipText(s string) string {
	if len(s) > 128 {
		return s[:128] + "..."
	}
	return s
}
