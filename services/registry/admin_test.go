package registry

import (
	"errors"
	"testing"

	"github.com/bai-sh/bai/pkg/events"
)

// An admin lists another key's sessions; a user may not, and nothing of
// the other key leaks. Every session carries its directory fields.
func TestAdminListsOtherKeys(t *testing.T) {
	h := newHarness(t)
	h.admin = "ADMIN"
	h.start()
	h.enqueue("USER", "s1", "mine")
	h.lifecycle("USER", "s1", events.StatusRunning)
	h.enqueue("ADMIN", "s2", "theirs")

	resp, err := request[events.ListResponse](t, h.nc, "ADMIN", events.OpSessionList, events.ListRequest{AccessKey: "USER"})
	if err != nil || !resp.Admin || resp.Total != 1 || resp.Sessions[0].ID != "s1" {
		t.Fatalf("admin --access-key USER: %+v %v", resp, err)
	}
	s := resp.Sessions[0]
	if s.UserEmail != "user@bai.local" || s.UserID == "" || s.GroupID == "" || s.Registry != "cr.backend.ai" ||
		s.ClusterSize != 1 || len(s.AgentIDs) != 1 || s.LastActivity == nil {
		t.Fatalf("directory fields: %+v", s)
	}
	own, err := request[events.ListResponse](t, h.nc, "ADMIN", events.OpSessionList, events.ListRequest{})
	if err != nil || own.Total != 1 || own.Sessions[0].ID != "s2" || own.Sessions[0].UserEmail != "admin@bai.local" {
		t.Fatalf("admin's own: %+v %v", own, err)
	}

	resp, err = request[events.ListResponse](t, h.nc, "USER", events.OpSessionList, events.ListRequest{AccessKey: "ADMIN"})
	if !errors.Is(err, events.ErrForbidden) || len(resp.Sessions) != 0 {
		t.Fatalf("user --access-key ADMIN: %+v %v", resp, err)
	}
	resp, err = request[events.ListResponse](t, h.nc, "USER", events.OpSessionList, events.ListRequest{AccessKey: "USER"})
	if err != nil || resp.Admin || resp.Total != 1 {
		t.Fatalf("user --access-key of its own: %+v %v", resp, err)
	}
	if _, err := request[events.ListResponse](t, h.nc, "ADMIN", events.OpSessionList, events.ListRequest{AccessKey: "a.b"}); !errors.Is(err, events.ErrInvalid) {
		t.Fatalf("bad access key: %v", err)
	}

	// Queue positions count pending sessions of every key, oldest first.
	h.enqueue("USER", "s3", "later")
	for sid, want := range map[string]int{"s2": 1, "s3": 2} {
		ak := map[string]string{"s2": "ADMIN", "s3": "USER"}[sid]
		info, err := request[events.SessionInfo](t, h.nc, ak, events.OpSessionGet, events.GetRequest{Ref: sid})
		if err != nil || info.QueuePosition != want {
			t.Errorf("%s: position %d (want %d) %v", sid, info.QueuePosition, want, err)
		}
	}
	if info, err := request[events.SessionInfo](t, h.nc, "USER", events.OpSessionGet, events.GetRequest{Ref: "s1"}); err != nil || info.QueuePosition != 0 {
		t.Errorf("running session: position %d %v", info.QueuePosition, err)
	}
}

func TestImageRegistry(t *testing.T) {
	for image, want := range map[string]string{
		"python:3.11-debian12":            "docker.io",
		"library/python:3":                "docker.io",
		"cr.backend.ai/stable/python:3.9": "cr.backend.ai",
		"localhost:5000/x:1":              "localhost:5000",
		"localhost/x":                     "localhost",
	} {
		if got := imageRegistry(image); got != want {
			t.Errorf("imageRegistry(%q) = %q, want %q", image, got, want)
		}
	}
}
