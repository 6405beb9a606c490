package gateway

import (
	"context"
	"encoding/json"
	"strings"

	"github.com/nats-io/nats.go/micro"

	"github.com/bai-sh/bai/pkg/events"
)

// handleImageAdd registers an image (image.add, admins only): the full
// reference maps to itself in the alias table, and each alias to it. The
// image must be where the agents' runtime finds it (docker: pulled, or
// loaded or built into each agent host's engine; docs/operations.md).
func (s *Service) handleImageAdd(req micro.Request) {
	s.adminOp(req, func(ctx context.Context, _ string) (any, error) { return s.imageAdd(ctx, req.Data()) })
}

// validImageName checks an image reference or alias as the table keeps it.
func validImageName(what, v string) error {
	if v == "" || len(v) > events.MaxImageLen || !printable(v) || strings.ContainsAny(v, " \t") {
		return events.Errorf(events.ErrInvalid, "invalid %s %q: 1-%d printable characters without spaces", what, clip(v), events.MaxImageLen)
	}
	return nil
}

func (s *Service) imageAdd(ctx context.Context, data []byte) (*events.ImageListResponse, error) {
	var r events.ImageAddRequest
	if err := json.Unmarshal(data, &r); err != nil {
		return nil, events.Errorf(events.ErrInvalid, "malformed image add request: %v", err)
	}
	if err := validImageName("image", r.Name); err != nil {
		return nil, err
	}
	s.imgMu.RLock()
	cur, exists := s.images[r.Name]
	var conflict error
	switch {
	case exists && cur != r.Name:
		conflict = events.Errorf(events.ErrConflict, "%s is already an alias of %s", r.Name, cur)
	default:
		for _, a := range r.Aliases {
			if err := validImageName("alias", a); err != nil {
				conflict = err
				break
			}
			if t, ok := s.images[a]; ok && t == a {
				conflict = events.Errorf(events.ErrConflict, "%s is an image, not an alias", a)
				break
			}
		}
	}
	s.imgMu.RUnlock()
	if conflict != nil {
		return nil, conflict
	}
	put := func(alias string) error {
		v, _ := json.Marshal(imageEntry{Alias: alias, Target: r.Name})
		if _, err := s.kvImages.Put(ctx, imageKey(alias), v); err != nil {
			return events.Errorf(events.ErrInternal, "could not store image %s: %v", alias, err)
		}
		s.imgMu.Lock()
		s.images[alias] = r.Name
		s.imgMu.Unlock()
		return nil
	}
	for _, alias := range append([]string{r.Name}, r.Aliases...) {
		if err := put(alias); err != nil {
			return nil, err
		}
	}
	return s.imageList(), nil
}
