package agent_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bai-sh/bai/pkg/events"
	"github.com/bai-sh/bai/services/agent"
)

// TestImageAnswersPython: in a kernel of the python image, a shell command
// finds `python` and `python3` (the image's interpreter) and `pip` where
// the host has pip beside it, sandboxed or not; a sandboxed kernel cannot
// change them.
func TestImageAnswersPython(t *testing.T) {
	t.Parallel()
	interp := "/usr/bin/python3"
	if _, err := os.Stat(interp); err != nil {
		t.Skip("no /usr/bin/python3")
	}
	pip := ""
	for _, p := range []string{"pip3", "pip"} {
		if fi, err := os.Stat(filepath.Join("/usr/bin", p)); err == nil && fi.Mode()&0o111 != 0 {
			pip = p
			break
		}
	}
	for _, c := range []struct {
		name    string
		disable bool
	}{{"sandboxed", false}, {"plain", true}} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			if !c.disable && !sandboxed(t) {
				t.Skip("no sandbox here")
			}
			e := newEnv(t)
			dir := t.TempDir()
			a := e.start(agent.Config{DataDir: dir, ID: "agent-1", Interpreters: map[string]string{"python:": interp},
				Sandbox: agent.SandboxOptions{Disable: c.disable}})
			sp := spec("s1")
			e.schedule(a, sp)
			e.waitEvent(sp.ID, events.EventStarted)

			script := `python -c 'import sys; print(sys.version_info[0], sys.executable.endswith("/python"))'
python3 -c 'print("three")'
d=$(dirname "$(command -v python)")
echo "$PATH" | cut -d: -f1 | grep -qx "$d" && echo first
if command -v pip >/dev/null; then pip --version | cut -c1-4; else echo no-pip; fi
touch "$d/x" 2>/dev/null && echo writable || echo read-only
ln -s /bin/true "$d/python" 2>/dev/null && echo replaced || echo kept
`
			e.execute(a, sp, events.RunSpec{ID: "r1", Exec: script})
			o := e.waitExit(sp.ID, "r1")
			if o.exit != "0" {
				t.Fatalf("exit %s: %q %q", o.exit, o.stdout, o.stderr)
			}
			want := "3 True\nthree\nfirst\n"
			if pip != "" {
				want += "pip \n"
			} else {
				want += "no-pip\n"
			}
			if c.disable {
				// A plain process is the agent's user: root here may
				// write anywhere; only the outcome for python counts.
				lines := strings.SplitAfter(string(o.stdout), "\n")
				if got := strings.Join(lines[:4], ""); got != want {
					t.Fatalf("stdout %q, want it to start %q", o.stdout, want)
				}
				bins, err := filepath.Glob(filepath.Join(dir, "bin", "*", "python"))
				if err != nil || len(bins) != 1 {
					t.Fatalf("host bin dirs: %v %v", bins, err)
				}
				return
			}
			want += "read-only\nkept\n"
			if string(o.stdout) != want {
				t.Fatalf("stdout %q, want %q (stderr %q)", o.stdout, want, o.stderr)
			}
			if strings.Contains(string(o.stdout), dir) {
				t.Fatalf("the kernel sees the agent's data dir: %q", o.stdout)
			}
		})
	}
}
