package gateway

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"

	"github.com/bai-sh/bai/pkg/events"
	"github.com/bai-sh/bai/pkg/events/streams"
)

// ImagesBucket is the KV bucket of the image alias table: each alias or
// full reference (key: its base64url) maps to a full reference. It is
// seeded with Config.Images when first created.
const ImagesBucket = "bai_images"

type imageEntry struct {
	Alias  string `json:"alias"`
	Target string `json:"target"`
}

func imageKey(alias string) string { return base64.RawURLEncoding.EncodeToString([]byte(alias)) }

func (s *Service) imagesBucketConfig() jetstream.KeyValueConfig {
	return jetstream.KeyValueConfig{Bucket: ImagesBucket, Description: "bai image aliases", History: 1,
		Storage: jetstream.FileStorage, Replicas: streams.ResolveReplicas(s.js, s.cfg.Streams.Replicas)}
}

// startImages opens the alias table (creating and seeding it the first
// time) and keeps s.images in step with it until ctx ends.
func (s *Service) startImages(ctx context.Context) error {
	kv, err := s.js.CreateKeyValue(ctx, s.imagesBucketConfig())
	switch {
	case err == nil:
		for alias, target := range s.cfg.Images {
			v, _ := json.Marshal(imageEntry{Alias: alias, Target: target})
			if _, err := kv.Create(ctx, imageKey(alias), v); err != nil && !errors.Is(err, jetstream.ErrKeyExists) {
				return fmt.Errorf("gateway: seed image aliases: %w", err)
			}
		}
	case errors.Is(err, jetstream.ErrBucketExists):
		// Made before: raised to this gateway's replicas, never lowered.
		if kv, err = streams.ProvisionBucket(ctx, s.js, s.imagesBucketConfig()); err != nil {
			return fmt.Errorf("gateway: image aliases: %w", err)
		}
	default:
		return fmt.Errorf("gateway: image aliases: %w", err)
	}
	s.kvImages = kv
	w, err := kv.WatchAll(ctx)
	if err != nil {
		return fmt.Errorf("gateway: watch image aliases: %w", err)
	}
	// The initial values end with a nil entry.
	for e := range w.Updates() {
		if e == nil {
			break
		}
		s.applyImage(e)
	}
	go func() {
		defer func() { _ = w.Stop() }()
		for e := range w.Updates() {
			if e != nil {
				s.applyImage(e)
			}
		}
	}()
	return nil
}

func (s *Service) applyImage(e jetstream.KeyValueEntry) {
	raw, err := base64.RawURLEncoding.DecodeString(e.Key())
	if err != nil {
		return
	}
	s.imgMu.Lock()
	defer s.imgMu.Unlock()
	if e.Operation() != jetstream.KeyValuePut {
		delete(s.images, string(raw))
		return
	}
	var ie imageEntry
	if json.Unmarshal(e.Value(), &ie) == nil && ie.Alias == string(raw) {
		s.images[ie.Alias] = ie.Target
	}
}

func (s *Service) resolveImage(ref string) (string, error) {
	if ref == "" {
		return "", events.Errorf(events.ErrInvalid, "no image given")
	}
	s.imgMu.RLock()
	defer s.imgMu.RUnlock()
	if full, ok := s.images[ref]; ok {
		return full, nil
	}
	known := make([]string, 0, len(s.images))
	for k := range s.images {
		known = append(known, k)
	}
	sort.Strings(known)
	return "", events.Errorf(events.ErrInvalid, "unknown image %q (known: %s)", clip(ref), strings.Join(known, ", "))
}

// imageList lists the full images, each with its aliases.
func (s *Service) imageList() *events.ImageListResponse {
	s.imgMu.RLock()
	defer s.imgMu.RUnlock()
	by := map[string][]string{}
	for alias, target := range s.images {
		if _, ok := by[target]; !ok {
			by[target] = []string{}
		}
		if alias != target {
			by[target] = append(by[target], alias)
		}
	}
	resp := &events.ImageListResponse{Images: []events.ImageInfo{}}
	for name, aliases := range by {
		sort.Strings(aliases)
		resp.Images = append(resp.Images, events.ImageInfo{Name: name, Aliases: aliases})
	}
	sort.Slice(resp.Images, func(i, j int) bool { return resp.Images[i].Name < resp.Images[j].Name })
	return resp
}

func (s *Service) handleImageList(req micro.Request) {
	if _, err := callerKey(req); err != nil {
		respond(req, nil, err)
		return
	}
	respond(req, s.imageList(), nil)
}

func (s *Service) handleImageAlias(req micro.Request) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := s.imageAlias(ctx, req)
	respond(req, resp, err)
}

// isAdmin is the gateway's one place that decides the admin role: the
// configured admin key (the server's first keypair), or a keypair whose
// role in the keypairs bucket is admin. A failed lookup is not an admin.
func (s *Service) isAdmin(ak string) bool {
	if s.cfg.AdminAccessKey != "" && ak == s.cfg.AdminAccessKey {
		return true
	}
	if s.quota == nil {
		return false
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	kp, _, err := s.quota.keys.Get(ctx, ak)
	return err == nil && kp.IsAdmin()
}

func (s *Service) imageAlias(ctx context.Context, req micro.Request) (*events.ImageListResponse, error) {
	ak, err := callerKey(req)
	if err != nil {
		return nil, err
	}
	if !s.isAdmin(ak) {
		return nil, events.Errorf(events.ErrForbidden, "only an admin may set image aliases")
	}
	var ar events.ImageAliasRequest
	if err := json.Unmarshal(req.Data(), &ar); err != nil {
		return nil, events.Errorf(events.ErrInvalid, "malformed alias request: %v", err)
	}
	if ar.Alias == "" || len(ar.Alias) > events.MaxImageLen || !printable(ar.Alias) || strings.ContainsAny(ar.Alias, " \t") {
		return nil, events.Errorf(events.ErrInvalid, "invalid alias %q: 1-%d printable characters without spaces", clip(ar.Alias), events.MaxImageLen)
	}
	s.imgMu.RLock()
	target, known := s.images[ar.Target]
	cur, exists := s.images[ar.Alias]
	s.imgMu.RUnlock()
	switch {
	case !known || target != ar.Target:
		return nil, events.Errorf(events.ErrInvalid, "unknown image %q: the target must be a full image (see bai admin image list)", clip(ar.Target))
	case exists && cur == ar.Alias && ar.Alias != ar.Target:
		return nil, events.Errorf(events.ErrConflict, "%s is an image, not an alias", ar.Alias)
	}
	v, _ := json.Marshal(imageEntry{Alias: ar.Alias, Target: ar.Target})
	if _, err := s.kvImages.Put(ctx, imageKey(ar.Alias), v); err != nil {
		return nil, events.Errorf(events.ErrInternal, "could not store the alias: %v", err)
	}
	s.imgMu.Lock()
	s.images[ar.Alias] = ar.Target
	s.imgMu.Unlock()
	return s.imageList(), nil
}
