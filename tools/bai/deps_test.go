package main

import (
	"os/exec"
	"strings"
	"testing"
)

// forbidden are import path prefixes the bai binary (and its tests) must
// never depend on: no server, storage, service or runtime code.
var forbidden = []string{
	"github.com/nats-io/nats-server",
	"go.etcd.io/bbolt",
	"github.com/bai-sh/bai/services/",
	"github.com/bai-sh/bai/server",
	"github.com/bai-sh/bai/internal/",
	"github.com/docker/",
	"github.com/moby/",
	"github.com/containerd/",
	"github.com/opencontainers/",
	// The services' fast JSON (pkg/events/fastjson) and metrics: the CLI
	// decodes a few answers with encoding/json and exports nothing.
	"github.com/goccy/",
	"github.com/bai-sh/bai/pkg/events/fastjson",
	"github.com/prometheus/",
	"github.com/bai-sh/bai/pkg/svcflags",
}

func TestDeps(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "-test", "github.com/bai-sh/bai/tools/bai/...").Output()
	if err != nil {
		var stderr string
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = string(ee.Stderr)
		}
		t.Fatalf("go list: %v\n%s", err, stderr)
	}
	deps := strings.Fields(string(out))
	found := false
	for _, d := range deps {
		if d == "github.com/nats-io/nats.go" {
			found = true
		}
		for _, f := range forbidden {
			if strings.HasPrefix(d, f) {
				t.Errorf("tools/bai depends on %s", d)
			}
		}
	}
	if !found {
		t.Fatalf("go list -deps does not list nats.go; is the listing right?\n%s", out)
	}
}
