package fastjson

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/bai-sh/bai/pkg/events"
)

// FuzzUnmarshalMatchesEncodingJSON: the hot path's codec (goccy/go-json)
// never panics on any input, and an event both it and encoding/json accept
// reads the same; what it writes, encoding/json reads back the same. "The
// same" is compared as encoding/json writes it (a nil and an empty slice,
// or two time zones of one instant, are one JSON).
func FuzzUnmarshalMatchesEncodingJSON(f *testing.F) {
	for _, s := range []string{
		`{"v":1,"id":"x","name":"session_started","access_key":"AK","session_id":"s1"}`,
		`{"v":1,"id":"x","name":"session_scheduled","access_key":"AK","session_id":"s1","agent_id":"a","session":{"id":"s1","slots":{"cpu":"1"},"created_at":"2026-11-27T09:00:00Z","priority":5,"run":{"id":"r","code":"print(1)"}}}`,
		`{"v":1,"V":2,"id":"\u00e9\ud800","time":"2026-11-27T09:00:00.123456789+01:00","reservations":[{"slots":null,"seq":18446744073709551615}]}`,
		`{"v":1e2}`, `{"id":"a","id":"b"}`, `{"session":{"batch_timeout":-1}}`, `[]`, `null`, `{"v":1}x`, "{\"id\":\"\xff\"}",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var mine, std events.Event
		errMine := events.Unmarshal(data, &mine)
		errStd := json.Unmarshal(data, &std)
		if errMine != nil || errStd != nil {
			return
		}
		if a, b := stdJSON(t, &mine), stdJSON(t, &std); !bytes.Equal(a, b) {
			t.Fatalf("%q:\n goccy %s\n   std %s", data, a, b)
		}
		out, err := events.Marshal(&mine)
		if err != nil {
			t.Fatalf("marshal %+v: %v", mine, err)
		}
		var back events.Event
		if err := json.Unmarshal(out, &back); err != nil {
			t.Fatalf("encoding/json cannot read %s: %v", out, err)
		}
		if a, b := stdJSON(t, &back), stdJSON(t, &mine); !bytes.Equal(a, b) {
			t.Fatalf("round trip of %q through %s:\n got %s\nwant %s", data, out, a, b)
		}
	})
}

func stdJSON(t *testing.T, e *events.Event) []byte {
	t.Helper()
	b, err := json.Marshal(e)
	if err != nil {
		t.Fatalf("encoding/json: %v", err)
	}
	return b
}

// scheduled is a session_scheduled with its session spec, as the
// scheduler writes it and every consumer of the log reads it.
const scheduled = `{"v":1,"id":"e1","name":"session_scheduled","time":"2026-11-27T09:00:00.123456789Z",` +
	`"access_key":"AKBENCH","session_id":"b0000001","kernel_id":"k1","agent_id":"sim-00001","agent_epoch":1,` +
	`"session":{"id":"b0000001","name":"bai-b0000001","access_key":"AKBENCH","image":"cr.backend.ai/python:3.11",` +
	`"requested_image":"python","type":"interactive","slots":{"cpu":"1","mem":"268435456"},"domain":"default",` +
	`"group":"default","scaling_group":"default","main_kernel_id":"k1","created_at":"2026-11-27T09:00:00.123456789Z"}}`

// BenchmarkDecode decodes a session_scheduled with this codec, subject
// check and validation included (pkg/events' BenchmarkDecode is the same
// with encoding/json).
func BenchmarkDecode(b *testing.B) {
	data := []byte(scheduled)
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := events.Decode("bai.session.AKBENCH.b0000001.session_scheduled.sim-00001", data); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkEncode encodes a session_scheduled with this codec.
func BenchmarkEncode(b *testing.B) {
	var e events.Event
	if err := events.Unmarshal([]byte(scheduled), &e); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := events.Marshal(&e); err != nil {
			b.Fatal(err)
		}
	}
}
