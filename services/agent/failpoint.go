//go:build failpoint

package agent

import (
	"os"
	"syscall"
)

// failpoint is the point where the agent kills itself, named by
// BAI_AGENT_FAILPOINT: the crash tests use it to hit one exact window
// (kill -9 at a random time rarely does). Unset, crashAt does nothing.
// Only a binary built with -tags failpoint (the crash tests' build)
// reads it; a production agent has no failpoints (failpoint_off.go).
var failpoint = os.Getenv("BAI_AGENT_FAILPOINT")

// crashAt kills the process as kill -9 would when the failpoint is name.
func crashAt(name string) {
	if failpoint == name {
		_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {} // the signal is on its way
	}
}
