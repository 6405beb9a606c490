package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"

	"github.com/bai-sh/bai/pkg/events"
	"github.com/bai-sh/bai/pkg/events/streams"
)

// uploadTTL bounds how long an uploaded file waits for its run.
const uploadTTL = 24 * time.Hour

// uploads opens (creating it the first time) the object store of uploads.
func (s *Service) uploads(ctx context.Context) (jetstream.ObjectStore, error) {
	s.upMu.Lock()
	defer s.upMu.Unlock()
	if s.upStore != nil {
		return s.upStore, nil
	}
	obs, err := streams.ProvisionObjectStore(ctx, s.js, jetstream.ObjectStoreConfig{
		Bucket:      events.UploadBucket,
		Description: "bai: files uploaded for runs, until the agent fetches them",
		TTL:         uploadTTL,
		Storage:     jetstream.FileStorage,
		Replicas:    s.cfg.Streams.Replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("upload store: %w", err)
	}
	s.upStore = obs
	return obs, nil
}

func (s *Service) handleUpload(req micro.Request) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, err := s.upload(ctx, req)
	respond(req, resp, err)
}

func (s *Service) upload(ctx context.Context, req micro.Request) (*events.UploadResponse, error) {
	ak, err := callerKey(req)
	if err != nil {
		return nil, err
	}
	var ur events.UploadRequest
	if !utf8.Valid(req.Data()) {
		// The decoder would turn a bad byte of a path into U+FFFD.
		return nil, events.Errorf(events.ErrInvalid, "malformed upload request: not UTF-8")
	}
	if err := json.Unmarshal(req.Data(), &ur); err != nil {
		return nil, events.Errorf(events.ErrInvalid, "malformed upload request: %v", err)
	}
	switch {
	case !events.ValidToken(ur.SessionID):
		return nil, events.Errorf(events.ErrInvalid, "invalid session id %q", clip(ur.SessionID))
	case len(ur.Data) > events.MaxUploadFile:
		return nil, events.Errorf(events.ErrInvalid, "file %s is %d bytes (at most %d)", clip(ur.Path), len(ur.Data), events.MaxUploadFile)
	}
	// The run id and the path name a file in the kernel's work directory
	// (events.CheckRunID, events.CheckUploadPath): refused before anything
	// is stored.
	if err := events.CheckRunID(ur.RunID); err != nil {
		return nil, events.Errorf(events.ErrInvalid, "%s", err)
	}
	if err := events.CheckUploadPath(ur.Path); err != nil {
		return nil, events.Errorf(events.ErrInvalid, "%s", err)
	}
	if err := s.storageErr(); err != nil {
		return nil, err
	}
	obs, err := s.uploads(ctx)
	if err != nil {
		return nil, events.Errorf(events.ErrInternal, "%v", err)
	}
	if _, err := obs.Put(ctx, jetstream.ObjectMeta{Name: events.UploadObject(ak, ur.SessionID, ur.RunID, ur.Path)}, bytes.NewReader(ur.Data)); err != nil {
		return nil, events.Errorf(events.ErrInternal, "could not store %s: %v", clip(ur.Path), err)
	}
	return &events.UploadResponse{Path: ur.Path, Size: len(ur.Data)}, nil
}

// checkFiles checks a run's file list: valid, distinct paths, each one
// uploaded for this run.
func (s *Service) checkFiles(ctx context.Context, ak, sid string, run *events.RunSpec) error {
	if run == nil || len(run.Files) == 0 {
		return nil
	}
	if err := events.CheckRunID(run.ID); err != nil {
		return events.Errorf(events.ErrInvalid, "%s", err)
	}
	if len(run.Files) > events.MaxUploadFiles {
		return events.Errorf(events.ErrInvalid, "too many files (at most %d)", events.MaxUploadFiles)
	}
	obs, err := s.uploads(ctx)
	if err != nil {
		return events.Errorf(events.ErrInternal, "%v", err)
	}
	seen := make(map[string]bool, len(run.Files))
	for _, p := range run.Files {
		if err := events.CheckUploadPath(p); err != nil {
			return events.Errorf(events.ErrInvalid, "%s", err)
		}
		if seen[p] {
			return events.Errorf(events.ErrInvalid, "file %s given twice", p)
		}
		seen[p] = true
		_, err := obs.GetInfo(ctx, events.UploadObject(ak, sid, run.ID, p))
		if errors.Is(err, jetstream.ErrObjectNotFound) {
			return events.Errorf(events.ErrInvalid, "file %s was not uploaded for run %s", clip(p), run.ID)
		}
		if err != nil {
			return events.Errorf(events.ErrInternal, "could not look up file %s: %v", clip(p), err)
		}
	}
	return nil
}
