package events

import (
	"encoding/json"
	"reflect"
	"testing"
)

// FuzzUnmarshalMatchesEncodingJSON: the hot path's codec (goccy/go-json)
// never panics on any input, and an event both it and encoding/json accept
// reads the same; what it writes, encoding/json reads back the same.
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
		if !reflect.DeepEqual(normalize(mine), normalize(std)) {
			t.Fatalf("%q:\n goccy %+v\n   std %+v", data, mine, std)
		}
		out, err := Marshal(&mine)
		if err != nil {
			t.Fatalf("marshal %+v: %v", mine, err)
		}
		var back Event
		if err := json.Unmarshal(out, &back); err != nil || !reflect.DeepEqual(normalize(back), normalize(mine)) {
			t.Fatalf("round trip of %q through %s: %+v %v", data, out, back, err)
		}
	})
}

// normalize drops what DeepEqual tells apart but JSON does not: time
// locations of the same instant.
func normalize(e Event) Event {
	e.Time = e.Time.UTC()
	if e.Session != nil {
		s := *e.Session
		s.CreatedAt = s.CreatedAt.UTC()
		if s.StartsAt != nil {
			t := s.StartsAt.UTC()
			s.StartsAt = &t
		}
		e.Session = &s
	}
	return e
}
