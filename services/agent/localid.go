package agent

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/bai-sh/bai/pkg/events"
)

// LocalID is the id that an agent of Config{DataDir: dataDir} without an
// ID takes: the one kept in its state db, else one made from the host
// name. It reads the state db without holding it open and starts
// nothing, so that a server can scope the agent's NATS user to its id
// before NATS runs. Its errors wrap ErrConfig, as New's.
func LocalID(dataDir string) (string, error) {
	if dataDir == "" {
		return "", fmt.Errorf("%w: DataDir is required", ErrConfig)
	}
	host, _ := os.Hostname()
	id, err := localID(filepath.Join(dataDir, "agent.db"), host)
	if err != nil {
		return "", fmt.Errorf("%w: %v", ErrConfig, err)
	}
	if !events.ValidToken(id) {
		return "", fmt.Errorf("%w: agent id %q is not a token", ErrConfig, id)
	}
	return id, nil
}

// localID is the id stored in the state db at dbPath, else
// "agent-<host>" made a token.
func localID(dbPath, host string) (string, error) {
	id, err := storedID(dbPath)
	if err != nil || id != "" {
		return id, err
	}
	return "agent-" + tokenize(host, events.MaxTokenLen-len("agent-")), nil
}
