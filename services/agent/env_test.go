package agent

import (
	"slices"
	"testing"
)

// Both runtimes build an execution's environment with execEnv: the
// runtime's own variables first, the session's in key order without the
// ones that cannot be one variable, and the GPUs last.
func TestExecEnv(t *testing.T) {
	base := []string{"PATH=/usr/bin", "HOME=/home/work"}
	for _, tc := range []struct {
		name    string
		vars    map[string]string
		gpus    string
		hasGPUs bool
		want    []string
	}{
		{"none", nil, "", false, []string{"PATH=/usr/bin", "HOME=/home/work"}},
		{"sorted", map[string]string{"B": "2", "A": "1"}, "", false, []string{"PATH=/usr/bin", "HOME=/home/work", "A=1", "B=2"}},
		{"bad keys and values dropped", map[string]string{"": "x", "A=B": "x", "N\x00": "x", "V": "a\x00b", "OK": "a=b"}, "", false,
			[]string{"PATH=/usr/bin", "HOME=/home/work", "OK=a=b"}},
		{"gpus last", map[string]string{"A": "1"}, "GPU-1,GPU-2", true, []string{"PATH=/usr/bin", "HOME=/home/work", "A=1", "CUDA_VISIBLE_DEVICES=GPU-1,GPU-2"}},
		{"no gpus given", nil, "GPU-1", false, []string{"PATH=/usr/bin", "HOME=/home/work"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := execEnv(base, tc.vars, tc.gpus, tc.hasGPUs)
			if !slices.Equal(got, tc.want) {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
		})
	}
	if base[0] != "PATH=/usr/bin" || len(base) != 2 {
		t.Fatalf("base changed: %q", base)
	}
}
