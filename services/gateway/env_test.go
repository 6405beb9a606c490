package gateway

import (
	"errors"
	"strings"
	"testing"

	"github.com/bai-sh/bai/pkg/events"
)

// TestEnvRules: what a user's -e may not set or smuggle.
func TestEnvRules(t *testing.T) {
	for name, env := range map[string]map[string]string{
		"LD_PRELOAD":      {"LD_PRELOAD": "/tmp/x.so"},
		"LD_LIBRARY_PATH": {"LD_LIBRARY_PATH": "/tmp"},
		"PATH":            {"PATH": "/tmp:/usr/bin"},
		"PYTHONPATH":      {"PYTHONPATH": "/tmp"},
		"BAI_ system":     {"BAI_SECRET_KEY": "x"},
		"NATS_ system":    {"NATS_URL": "nats://evil"},
		"key with =":      {"A=B": "x"},
		"key with NUL":    {"A\x00": "x"},
		"key with space":  {"A B": "x"},
		"key newline":     {"A\n": "x"},
		"digit first":     {"1A": "x"},
		"value NUL":       {"A": "a\x00b"},
		"value not UTF-8": {"A": "\xff"},
		"value too long":  {"A": strings.Repeat("x", events.MaxEnvLen+1)},
	} {
		if err := events.CheckEnv(env); !errors.Is(err, events.ErrInvalid) {
			t.Errorf("%s: %v", name, err)
		}
	}
	if err := events.CheckEnv(map[string]string{"FOO": "bar\nbaz", "_X1": ""}); err != nil {
		t.Fatal(err)
	}
}
