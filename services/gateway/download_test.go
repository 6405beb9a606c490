package gateway

import (
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/bai-sh/bai/pkg/events"
)

// hostileAgent answers the gateway's file requests for agent ag1 as a
// compromised agent might, by the path asked: whatever answer is in
// answers for it, else a good one.
type hostileAgent struct {
	mu   sync.Mutex
	seen []events.AgentFilesRequest
}

func (h *hostileAgent) requests() []events.AgentFilesRequest {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]events.AgentFilesRequest(nil), h.seen...)
}

func startHostileAgent(t *testing.T, nc *nats.Conn) *hostileAgent {
	t.Helper()
	h := &hostileAgent{}
	sub, err := nc.Subscribe("bai.agent.ag1.files.*", func(m *nats.Msg) {
		var req events.AgentFilesRequest
		_ = events.Unmarshal(m.Data, &req)
		h.mu.Lock()
		h.seen = append(h.seen, req)
		h.mu.Unlock()
		reply := func(v any) {
			data, _ := events.Marshal(v)
			_ = m.Respond(data)
		}
		chunk := events.DownloadResponse{Path: req.Path, Size: 5, Mode: "0644", MTime: time.Now(), Data: []byte("hello"), EOF: true}
		switch req.Path {
		case "other-path":
			chunk.Path = "../../etc/shadow"
			reply(chunk)
		case "too-big-chunk":
			chunk.Data, chunk.Size = make([]byte, events.MaxDownloadChunk+1), events.MaxDownloadChunk+1
			reply(chunk)
		case "past-size":
			chunk.Size = 3
			reply(chunk)
		case "bad-names":
			reply(events.FilesResponse{Path: req.Path, Files: []events.FileInfo{{Name: "../x", Type: events.FileRegular}}})
		case "odd-code":
			_ = m.RespondMsg(&nats.Msg{Header: nats.Header{events.HeaderErrorCode: {"999"}, events.HeaderError: {"odd"}}, Data: []byte("{}")})
		case "gone":
			_ = m.RespondMsg(&nats.Msg{Header: nats.Header{events.HeaderErrorCode: {events.CodeNotFound}, events.HeaderError: {"gone: no such file"}}, Data: []byte("{}")})
		default:
			if strings.HasSuffix(m.Subject, ".list") {
				reply(events.FilesResponse{Path: req.Path, Files: []events.FileInfo{{Name: "a.txt", Type: events.FileRegular, Size: 5, Mode: "-rw-r--r--"}}})
				return
			}
			reply(chunk)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return h
}

// TestFilesOutAdmission: bad paths are refused (400) before any agent is
// asked; a session of another key is not found, and naming its owner
// takes the admin role; a pending session has no agent; a silent agent
// is a retry; the agent's answer is checked (the chunk and path asked
// for, single names), and only known error codes pass.
func TestFilesOutAdmission(t *testing.T) {
	f := start(t, func(c *Config) { c.IdleTimeout = -1 })
	f.running(t, "s1")
	if err := f.call(t, events.OpSessionCreate, events.CreateRequest{SessionID: "pending", Image: "python"}, nil); err != nil {
		t.Fatal(err)
	}
	var resp events.DownloadResponse
	if err := f.call(t, events.OpSessionDownload, events.DownloadRequest{SessionID: "s1", Path: "a.txt"}, &resp); !errors.Is(err, events.ErrBusy) ||
		!strings.Contains(err.Error(), "not answering") {
		t.Errorf("no agent: %v", err)
	}
	h := startHostileAgent(t, f.nc)
	for name, c := range map[string]struct {
		op   string
		req  any
		want error
	}{
		"dotdot":          {events.OpSessionDownload, events.DownloadRequest{SessionID: "s1", Path: "../x"}, events.ErrInvalid},
		"absolute":        {events.OpSessionDownload, events.DownloadRequest{SessionID: "s1", Path: "/etc/shadow"}, events.ErrInvalid},
		"empty":           {events.OpSessionDownload, events.DownloadRequest{SessionID: "s1"}, events.ErrInvalid},
		"negative offset": {events.OpSessionDownload, events.DownloadRequest{SessionID: "s1", Path: "a", Offset: -1}, events.ErrInvalid},
		"bad session":     {events.OpSessionDownload, events.DownloadRequest{SessionID: "a.b", Path: "a"}, events.ErrInvalid},
		"ls dotdot":       {events.OpSessionFiles, events.FilesRequest{SessionID: "s1", Path: "a/../.."}, events.ErrInvalid},
		"ls absolute":     {events.OpSessionFiles, events.FilesRequest{SessionID: "s1", Path: "/"}, events.ErrInvalid},
		"unknown":         {events.OpSessionDownload, events.DownloadRequest{SessionID: "nope", Path: "a"}, events.ErrNotFound},
		"pending":         {events.OpSessionDownload, events.DownloadRequest{SessionID: "pending", Path: "a"}, events.ErrConflict},
		"owner not admin": {events.OpSessionDownload, events.DownloadRequest{SessionID: "s1", AccessKey: "AKIAOTHER00000000000", Path: "a"}, events.ErrForbidden},
	} {
		if err := f.call(t, c.op, c.req, nil); !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", name, err, c.want)
		}
	}
	if n := len(h.requests()); n != 0 {
		t.Errorf("the agent was asked %d times for refused requests", n)
	}
	// Another key: its own s1 does not exist.
	if err := f.callAs(t, "AKIAOTHER00000000000", events.OpSessionDownload, events.DownloadRequest{SessionID: "s1", Path: "a.txt"}, nil); !errors.Is(err, events.ErrNotFound) {
		t.Errorf("another key: %v", err)
	}

	if err := f.call(t, events.OpSessionDownload, events.DownloadRequest{SessionID: "s1", Path: "a.txt"}, &resp); err != nil || string(resp.Data) != "hello" {
		t.Fatalf("download: %+v %v", resp, err)
	}
	var ls events.FilesResponse
	if err := f.call(t, events.OpSessionFiles, events.FilesRequest{SessionID: "s1"}, &ls); err != nil || len(ls.Files) != 1 || ls.SessionID != "s1" {
		t.Fatalf("ls: %+v %v", ls, err)
	}
	if got := h.requests(); len(got) != 2 || got[0].AccessKey != ak || got[0].SessionID != "s1" || got[0].Path != "a.txt" {
		t.Errorf("the agent was asked %+v", got)
	}
	for path, want := range map[string]error{
		"other-path": events.ErrInternal, "too-big-chunk": events.ErrInternal, "past-size": events.ErrInternal,
		"odd-code": events.ErrInternal, "gone": events.ErrNotFound,
	} {
		if err := f.call(t, events.OpSessionDownload, events.DownloadRequest{SessionID: "s1", Path: path}, nil); !errors.Is(err, want) {
			t.Errorf("agent answer %s: %v, want %v", path, err, want)
		}
	}
	if err := f.call(t, events.OpSessionFiles, events.FilesRequest{SessionID: "s1", Path: "bad-names"}, nil); !errors.Is(err, events.ErrInternal) {
		t.Errorf("listing with ../x: %v", err)
	}
}
