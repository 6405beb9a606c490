package events

import (
	"bytes"
	"encoding/json"
	"testing"
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
		var mine, std Event
		errMine := Unmarshal(data, &mine)
		errStd := json.Unmarshal(data, &std)
		if errMine != nil || errStd != nil {
			return
		}
		if a, b := stdJSON(t, &mine), stdJSON(t, &std); !bytes.Equal(a, b) {
			t.Fatalf("%q:\n goccy %s\n   std %s", data, a, b)
		}
		out, err := Marshal(&mine)
		if err != nil {
			t.Fatalf("marshal %+v: %v", mine, err)
		}
		var back Event
		if err := json.Unmarshal(out, &back); err != nil {
			t.Fatalf("encoding/json cannot read %s: %v", out, err)
		}
		if a, b := stdJSON(t, &back), stdJSON(t, &mine); !bytes.Equal(a, b) {
			t.Fatalf("round trip of %q through %s:\n got %s\nwant %s", data, out, a, b)
		}
	})
}

func stdJSON(t *testing.T, e *Event) []byte {
	t.Helper()
	b, err := json.Marshal(e)
	if err != nil {
		t.Fatalf("encoding/json: %v", err)
	}
	return b
}
