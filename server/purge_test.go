package server

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/bai-sh/bai/services/agent"
)

// purgeAgentKernels destroys, at the test's end (after the server it is
// registered before stops), the kernels the all-in-one agent over dataDir
// kept for its next start: their cgroups and work dir mounts.
func purgeAgentKernels(t *testing.T, dataDir string) {
	t.Helper()
	t.Cleanup(func() {
		r := agent.NewProcessRuntime(filepath.Join(dataDir, "agent", "kernels"), nil)
		r.Sandbox(agent.SandboxOptions{})
		if err := r.Purge(context.Background()); err != nil {
			t.Errorf("purge agent kernels: %v", err)
		}
	})
}
