package client

import (
	"context"
	"errors"
	"net"
	"regexp"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/bai-sh/bai/pkg/events"
)

func TestNewID(t *testing.T) {
	re := regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)
	seen := make(map[string]bool)
	for range 1000 {
		id := NewID()
		if !re.MatchString(id) || !events.ValidToken(id) {
			t.Fatalf("NewID() = %q: not a UUIDv4 token", id)
		}
		if seen[id] {
			t.Fatalf("NewID() repeated %q", id)
		}
		seen[id] = true
	}
}

// closedPort returns the URL of a loopback port nothing listens on.
func closedPort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	url := "nats://" + l.Addr().String()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	return url
}

func TestConnectUnreachable(t *testing.T) {
	url := closedPort(t)
	_, err := Connect(context.Background(), Options{URL: url, AccessKey: "AK", SecretKey: "SK"})
	if !errors.Is(err, ErrUnreachable) {
		t.Fatalf("err = %v, want ErrUnreachable", err)
	}
	if want := "cannot reach the bai server at " + url + ": "; !strings.HasPrefix(err.Error(), want) {
		t.Fatalf("err = %q, want it to start with %q", err, want)
	}
}

func TestConnectRedactsPassword(t *testing.T) {
	url := strings.Replace(closedPort(t), "nats://", "nats://user:hunter2@", 1)
	_, err := Connect(context.Background(), Options{URL: url, AccessKey: "AK", SecretKey: "SK"})
	if !errors.Is(err, ErrUnreachable) || strings.Contains(err.Error(), "hunter2") {
		t.Fatalf("err = %v, want ErrUnreachable without the password", err)
	}
}

func TestConnectBadKeys(t *testing.T) {
	for _, o := range []Options{{AccessKey: "", SecretKey: "SK"}, {AccessKey: "a.b", SecretKey: "SK"}, {AccessKey: "AK"}} {
		if _, err := Connect(context.Background(), o); !errors.Is(err, ErrAuth) {
			t.Fatalf("Connect(%+v): err = %v, want ErrAuth", o, err)
		}
	}
}

func TestDecodeChunk(t *testing.T) {
	msg := func(subj, stream, body string) *nats.Msg {
		m := nats.NewMsg(subj)
		if stream != "" {
			m.Header.Set(events.HeaderStream, stream)
		}
		m.Data = []byte(body)
		return m
	}
	const subj = "bai.out.AK.sid.run1"
	tests := []struct {
		name string
		msg  *nats.Msg
		want Chunk
		bad  bool
	}{
		{"stdout", msg(subj, events.StreamStdout, "hi\n"), Chunk{RunID: "run1", Stream: events.StreamStdout, Data: []byte("hi\n")}, false},
		{"stderr", msg(subj, events.StreamStderr, "oops"), Chunk{RunID: "run1", Stream: events.StreamStderr, Data: []byte("oops")}, false},
		{"exit", msg(subj, events.StreamExit, "3"), Chunk{RunID: "run1", Stream: events.StreamExit, ExitCode: 3}, false},
		{"exit negative", msg(subj, events.StreamExit, "-9\n"), Chunk{RunID: "run1", Stream: events.StreamExit, ExitCode: -9}, false},
		{"exit not a number", msg(subj, events.StreamExit, "x"), Chunk{}, true},
		{"no stream header", msg(subj, "", "x"), Chunk{}, true},
		{"unknown stream", msg(subj, "stdin", "x"), Chunk{}, true},
		{"bad subject", msg("bai.out.AK.sid", events.StreamStdout, "x"), Chunk{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := decodeChunk(tt.msg.Subject, tt.msg)
			if tt.bad {
				if !errors.Is(err, ErrBadReply) {
					t.Fatalf("err = %v, want ErrBadReply", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.RunID != tt.want.RunID || got.Stream != tt.want.Stream || string(got.Data) != string(tt.want.Data) || got.ExitCode != tt.want.ExitCode {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}
