package gateway

import (
	"strings"
	"testing"

	"github.com/bai-sh/bai/pkg/events"
	"github.com/bai-sh/bai/pkg/slots"
)

// FuzzCreateRequest feeds arbitrary bytes through the create decoder and
// admission: never a panic, and whatever is admitted keeps the rules.
func FuzzCreateRequest(f *testing.F) {
	for _, s := range []string{
		`{"image":"python"}`,
		`{"image":"python","slots":["cpu=2","mem=1g"],"env":{"A":"b"},"name":"x-1","tag":"t"}`,
		`{"image":"python","env":{"LD_PRELOAD":"/x.so"}}`,
		`{"image":"python","type":"batch","startup_command":"echo"}`,
		`{"image":"python","run":{"id":"r","code":"print(1)"},"session_id":"../.."}`,
		`{"image":"python","name":"a\u0000b","slots":["cpu=1e400"]}`,
	} {
		f.Add([]byte(s))
	}
	def, _ := slots.ParseMap(map[string]string{"cpu": "1", "mem": "256m"})
	s := &Service{cfg: Config{Images: DefaultImages, Domain: "default", Group: "default", ScalingGroup: "default"}, defaults: def}
	f.Fuzz(func(t *testing.T, data []byte) {
		var cr events.CreateRequest
		if events.Unmarshal(data, &cr) != nil {
			return
		}
		spec, err := s.admit("AKIAAAAAAAAAAAAAAAAA", &cr)
		if err != nil {
			if err.Error() == "" {
				t.Fatal("empty error")
			}
			return
		}
		if !events.ValidToken(spec.ID) || events.CheckSessionName(spec.Name) != nil || events.CheckEnv(spec.Env) != nil || spec.Image == "" {
			t.Fatalf("admitted %+v", spec)
		}
		for k := range spec.Env {
			if strings.HasPrefix(k, "LD_") || k == "PATH" {
				t.Fatalf("admitted env %s", k)
			}
		}
		if _, err := slots.ParseMap(spec.Slots); err != nil {
			t.Fatalf("admitted slots %v: %v", spec.Slots, err)
		}
	})
}

// FuzzAdminRequests feeds arbitrary bytes through the admin decoders.
func FuzzAdminRequests(f *testing.F) {
	for _, s := range []string{
		`{"access_key":"AKIAAAAAAAAAAAAAAAAA"}`, `{"access_key":">"}`, `{"name":"p","max_concurrent_sessions":5}`,
		`{"name":"p","total_resource_slots":{"cpu":"-1"}}`, `[]`, `null`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if ak, err := keypairRef(data); err == nil && !events.ValidToken(ak) {
			t.Fatalf("accepted access key %q", ak)
		}
		var p Policy
		if decodeStrict("policy", data, &p) == nil && validatePolicy(&p) == nil {
			if !events.ValidToken(p.Name) || p.MaxConcurrentSessions < 0 || p.MaxPendingSessions < 0 {
				t.Fatalf("accepted policy %+v", p)
			}
		}
	})
}
