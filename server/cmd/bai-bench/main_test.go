package main

import (
	"os"
	"testing"
	"time"
)

// TestScenarios runs each load scenario tiny: the harness works end to
// end (every accepted session reaches RUNNING; ps answers a full page).
// It asserts no speed.
func TestScenarios(t *testing.T) {
	base := options{agents: 3, agentsConn: 2, sessions: 40, concurrency: 8, rate: 2000,
		psSessions: 30, psQueries: 5, timeout: time.Minute}
	for _, sc := range []string{"closed", "open", "flood", "floor", "ps"} {
		t.Run(sc, func(t *testing.T) {
			o := base
			o.scenario = sc
			o.dir = t.TempDir()
			if err := run(o); err != nil {
				t.Fatal(err)
			}
		})
	}
	t.Run("batch", func(t *testing.T) {
		o := base
		o.scenario, o.sessions, o.concurrency = "batch", 4, 2
		o.dir = t.TempDir()
		if err := run(o); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("runpath", func(t *testing.T) {
		if os.Geteuid() != 0 {
			t.Skip("the sandbox needs root")
		}
		if _, err := findPython(); err != nil {
			t.Skip("no python3")
		}
		o := base
		o.scenario, o.cliRuns, o.timeout = "runpath", 1, 5*time.Minute
		o.dir = t.TempDir()
		if err := run(o); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("unknown", func(t *testing.T) {
		o := base
		o.scenario = "nope"
		o.dir = t.TempDir()
		if err := run(o); err == nil {
			t.Fatal("unknown scenario: no error")
		}
	})
}
