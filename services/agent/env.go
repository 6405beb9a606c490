package agent

import (
	"sort"
	"strings"
)

// execEnv is the environment of an execution, for every runtime: base
// (the runtime's own PATH, HOME, LANG, ...), then the session's variables
// in key order, then CUDA_VISIBLE_DEVICES=gpus when the kernel was given
// GPUs (hasGPUs). A session variable whose key is empty or holds '=' or
// NUL, or whose value holds NUL, is dropped: it cannot be passed as one
// variable, and a key with '=' would set another one. This is security
// code shared by the runtimes so that it cannot drift between them.
func execEnv(base []string, vars map[string]string, gpus string, hasGPUs bool) []string {
	env := make([]string, 0, len(base)+len(vars)+1)
	env = append(env, base...)
	keys := make([]string, 0, len(vars))
	for key := range vars {
		keys = append(keys, key)
	}
	sort.Strings(keys)
	for _, key := range keys {
		if !validEnvVar(key, vars[key]) {
			continue
		}
		env = append(env, key+"="+vars[key])
	}
	if hasGPUs {
		env = append(env, "CUDA_VISIBLE_DEVICES="+gpus)
	}
	return env
}

// validEnvVar reports whether key=value can be passed as one variable.
func validEnvVar(key, value string) bool {
	return key != "" && !strings.ContainsAny(key, "=\x00") && !strings.ContainsRune(value, 0)
}
