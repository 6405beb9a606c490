package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/bai-sh/bai/pkg/events"
)

// requestAs sends a request as access key ak would: with a reply subject
// in ak's own inbox, the only one the gateway answers.
func requestAs(nc *nats.Conn, ak, subj string, data []byte) (*nats.Msg, error) {
	inbox := events.InboxPrefix(ak) + "." + nats.NewInbox()[len("_INBOX."):]
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		return nil, err
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := nc.PublishRequest(subj, inbox, data); err != nil {
		return nil, err
	}
	return sub.NextMsg(5 * time.Second)
}

func (f *fixture) callAs(t testing.TB, key, op string, req, resp any) error {
	t.Helper()
	subj, _ := events.APISubject(key, op)
	data, _ := json.Marshal(req)
	msg, err := requestAs(f.nc, key, subj, data)
	if err != nil {
		t.Fatalf("request %s: %v", op, err)
	}
	if err := events.ErrorFromHeader(map[string][]string(msg.Header)); err != nil {
		return err
	}
	if resp != nil {
		if err := json.Unmarshal(msg.Data, resp); err != nil {
			t.Fatalf("decode %s: %v", op, err)
		}
	}
	return nil
}

func TestImageAliases(t *testing.T) {
	f := start(t, func(c *Config) { c.AdminAccessKey = ak; c.IdleTimeout = -1 })
	var list events.ImageListResponse
	if err := f.callAs(t, "OTHER", events.OpImageList, struct{}{}, &list); err != nil {
		t.Fatal(err)
	}
	if len(list.Images) != 1 || list.Images[0].Name != "python:3.11-debian12" || len(list.Images[0].Aliases) != 4 {
		t.Fatalf("seeded list: %+v", list)
	}
	for name, c := range map[string]struct {
		key  string
		req  events.ImageAliasRequest
		want error
	}{
		"not an admin":     {"OTHER", events.ImageAliasRequest{Alias: "py", Target: "python:3.11-debian12"}, events.ErrForbidden},
		"unknown target":   {ak, events.ImageAliasRequest{Alias: "py", Target: "cobol:85"}, events.ErrInvalid},
		"alias as target":  {ak, events.ImageAliasRequest{Alias: "py", Target: "python"}, events.ErrInvalid},
		"empty alias":      {ak, events.ImageAliasRequest{Alias: "", Target: "python:3.11-debian12"}, events.ErrInvalid},
		"alias with space": {ak, events.ImageAliasRequest{Alias: "p y", Target: "python:3.11-debian12"}, events.ErrInvalid},
	} {
		if err := f.callAs(t, c.key, events.OpImageAlias, c.req, nil); !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", name, err, c.want)
		}
	}
	if err := f.call(t, events.OpSessionCreate, events.CreateRequest{Image: "py"}, nil); !errors.Is(err, events.ErrInvalid) {
		t.Fatalf("create with an unset alias: %v", err)
	}
	if err := f.callAs(t, ak, events.OpImageAlias, events.ImageAliasRequest{Alias: "py", Target: "python:3.11-debian12"}, &list); err != nil {
		t.Fatal(err)
	}
	var resp events.CreateResponse
	if err := f.call(t, events.OpSessionCreate, events.CreateRequest{Image: "py"}, &resp); err != nil || resp.Image != "python:3.11-debian12" {
		t.Fatalf("create with the new alias: %+v %v", resp, err)
	}
}

func TestCreateForAnotherOwner(t *testing.T) {
	f := start(t, func(c *Config) { c.AdminAccessKey = ak; c.IdleTimeout = -1 })
	if err := f.callAs(t, "OTHER", events.OpSessionCreate, events.CreateRequest{Image: "python", Owner: ak}, nil); !errors.Is(err, events.ErrForbidden) {
		t.Fatalf("a user creating for another key: %v", err)
	}
	if err := f.callAs(t, ak, events.OpSessionCreate, events.CreateRequest{Image: "python", Owner: "a.b"}, nil); !errors.Is(err, events.ErrInvalid) {
		t.Fatalf("bad owner: %v", err)
	}
	var resp events.CreateResponse
	if err := f.callAs(t, ak, events.OpSessionCreate, events.CreateRequest{SessionID: "s9", Image: "python", Owner: "OTHER"}, &resp); err != nil {
		t.Fatal(err)
	}
	subj, _ := events.SessionEventSubject("OTHER", "s9", events.EventEnqueued)
	if _, err := f.stream.GetLastMsgForSubject(context.Background(), subj); err != nil {
		t.Fatalf("the session is not the owner's: %v", err)
	}
}
