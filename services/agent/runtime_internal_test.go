package agent

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/bai-sh/bai/pkg/events"
)

// TestPlainCommand: only a line the shell would merely split and execute
// skips the shell.
func TestPlainCommand(t *testing.T) {
	plain := map[string][]string{
		"/bin/true":                    {"/bin/true"},
		"  /usr/bin/env  a=b\t-x ":     {"/usr/bin/env", "a=b", "-x"},
		"./run.sh --n=3 x,y:z+1@h%2 -": {"./run.sh", "--n=3", "x,y:z+1@h%2", "-"},
		"bin/tool":                     {"bin/tool"},
	}
	for line, want := range plain {
		got, ok := plainCommand(line)
		if !ok || !slices.Equal(got, want) {
			t.Errorf("%q: %q %v, want %q", line, got, ok, want)
		}
	}
	for _, line := range []string{
		"", "   ", "true", "echo hi", "exit 3", "cd /tmp", // no path: builtins and PATH
		"A=1 /bin/env", "./a=b", // an assignment, or what could read as one
		"/bin/echo $HOME", "/bin/echo `id`", "/bin/echo 'a b'", `/bin/echo "a"`, `/bin/echo a\ b`,
		"/bin/true; /bin/false", "/bin/true && x", "/bin/true | x", "/bin/true &",
		"/bin/true > f", "/bin/true < f", "/bin/ls *", "/bin/ls ?", "/bin/ls [a]", "/bin/ls ~",
		"/bin/true # c", "/bin/true\n/bin/false", "/bin/ls {a,b}", "/bin/true !", "(/bin/true)",
		"/bin/echo é", "/bin/true\v", "/bin/true\r",
		"/bin/echo " + strings.Repeat("x", maxInlineArg),
	} {
		if got, ok := plainCommand(line); ok {
			t.Errorf("%q: plain %q, want the shell", line, got)
		}
	}
}

// TestSandboxPlainCommand: a command line the shell would only split and
// execute runs without the shell (the sandbox's init is its parent), and
// where its words cannot be executed the shell runs the line as it always
// did: its message, its exit code, a script without #! run as one.
func TestSandboxPlainCommand(t *testing.T) {
	t.Parallel()
	r := sandboxRuntime(t, SandboxOptions{})
	k := kernelSpec("plain")
	if err := r.Create(t.Context(), k); err != nil {
		t.Fatal(err)
	}
	if err := r.WriteFile(k.MainKernelID, "noshebang", []byte("echo from-sh $0\nexit 4\n")); err != nil {
		t.Fatal(err)
	}
	run := func(line string) (int, string, string) {
		t.Helper()
		code, stdout, stderr, _ := runOut(t, r, k, line)
		return code, stdout, stderr
	}
	// /proc/self/stat's fourth field is the parent's pid: 1, the helper.
	code, out, _ := run("/bin/cat /proc/self/stat")
	if f := strings.Fields(out); code != 0 || len(f) < 4 || f[3] != "1" {
		t.Errorf("plain: exit %d, stat %q; want exit 0 and parent 1 (no shell between)", code, out)
	}
	code, out, _ = run("/bin/cat /proc/self/stat; true")
	if f := strings.Fields(out); code != 0 || len(f) < 4 || f[3] == "1" {
		t.Errorf("through the shell: exit %d, stat %q; want the shell as parent", code, out)
	}
	if code, out, _ = run("/bin/echo  a=b\t--x"); code != 0 || out != "a=b --x\n" {
		t.Errorf("words: exit %d, %q", code, out)
	}
	if code, _, errs := run("/no/such/tool -x"); code != 127 || !strings.Contains(errs, "not found") || strings.Contains(errs, "bai: sandbox") {
		t.Errorf("missing: exit %d, stderr %q; want the shell's 127 and message", code, errs)
	}
	if code, _, errs := run("./noshebang"); code != 126 || !strings.Contains(errs, "Permission denied") {
		t.Errorf("not executable: exit %d, stderr %q; want the shell's 126", code, errs)
	}
	if code, _, _ := run("/bin/chmod 755 noshebang"); code != 0 {
		t.Fatalf("chmod: exit %d", code)
	}
	if code, out, _ := run("./noshebang"); code != 4 || out != "from-sh ./noshebang\n" {
		t.Errorf("script without #!: exit %d, %q; want the shell to run it", code, out)
	}
}

// TestSandboxHidesManyKernels: with many kernels on the agent, an
// execution's mountinfo names none of the others (nor the kernels' root),
// with a helper started ahead (which holds a copy of every kernel's
// mount), with one of its own, without a helper (sandboxinit.Spawn, where
// this machine can), and where the kernels were mounted before
// the kernels' root was a mount of its own (each mount then goes on its
// own, Spec.KernelsRoot unset).
func TestSandboxHidesManyKernels(t *testing.T) {
	for _, c := range []struct {
		name     string
		prestart int
		before   int  // kernels mounted before the runtime starts
		helper   bool // every execution through the helper (else where it can, without)
	}{{"ahead", 1, 0, true}, {"own", -1, 0, true}, {"spawned", 0, 0, false}, {"mounted-before", -1, 20, false}} {
		t.Run(c.name, func(t *testing.T) {
			root := t.TempDir()
			for i := range c.before {
				dir := filepath.Join(root, fmt.Sprint("k-many-", i))
				if err := os.Mkdir(dir, 0o700); err != nil {
					t.Fatal(err)
				}
				if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size=64k"); err != nil {
					t.Skipf("SKIP: cannot mount here: %v", err)
				}
			}
			r := sandboxRuntimeAt(t, root, SandboxOptions{Prestart: c.prestart, ViaHelper: c.helper})
			var ks []*events.SessionSpec
			for i := range 60 {
				k := kernelSpec(fmt.Sprint("many-", i))
				if err := r.Create(t.Context(), k); err != nil {
					t.Fatal(err)
				}
				ks = append(ks, k)
			}
			if bound := r.sb.bound.Load(); bound != (c.before == 0) {
				t.Errorf("kernels' root bound: %v", bound)
			}
			runOut(t, r, ks[0], "/bin/true") // a helper started ahead after this
			if c.prestart > 0 {
				waitReady(t, r.sb.pool)
			}
			code, out, errs, _ := runOut(t, r, ks[7], "/bin/cat /proc/self/mountinfo; echo x >/home/work/x")
			if code != 0 {
				t.Fatalf("exit %d, %q", code, errs)
			}
			if strings.Contains(out, "k-many-") || strings.Contains(out, root) {
				t.Errorf("the execution sees the agent's kernels:\n%s", out)
			}
			if !strings.Contains(out, " "+KernelWorkDir+" ") {
				t.Errorf("no %s in\n%s", KernelWorkDir, out)
			}
			dir, _ := r.WorkDir(ks[7].MainKernelID)
			if b, err := os.ReadFile(filepath.Join(dir, "x")); err != nil || string(b) != "x\n" {
				t.Errorf("the execution's file on the kernel's mount: %q, %v", b, err)
			}
		})
	}
}
