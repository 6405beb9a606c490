package cli

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestCompletionScripts: each script is valid for its shell (checked by
// the shell itself where it is installed); an unknown shell is refused.
func TestCompletionScripts(t *testing.T) {
	for _, sh := range []string{"bash", "zsh", "fish"} {
		t.Run(sh, func(t *testing.T) {
			code, out, errOut := run(t, Env{}, "completion", sh)
			if code != 0 || errOut != "" || !strings.Contains(out, "__complete") {
				t.Fatalf("completion %s: %d %q %q", sh, code, out, errOut)
			}
			path, err := exec.LookPath(sh)
			if err != nil {
				t.Skipf("%s is not installed: the script is not parsed", sh)
			}
			f := t.TempDir() + "/bai." + sh
			if err := os.WriteFile(f, []byte(out), 0o644); err != nil {
				t.Fatal(err)
			}
			if msg, err := exec.Command(path, "-n", f).CombinedOutput(); err != nil {
				t.Fatalf("%s -n: %v\n%s", sh, err, msg)
			}
		})
	}
	for _, args := range [][]string{{"completion", "pwsh"}, {"completion"}, {"completion", "bash", "zsh"}} {
		code, out, errOut := run(t, Env{}, args...)
		if (code != ExitInvalid && code != ExitUsage) || out != "" || errOut == "" {
			t.Errorf("%v: %d %q %q", args, code, out, errOut)
		}
	}
}

// TestComplete: commands, subcommands, flags and flag values complete
// without a server; session and image candidates need one (and a dead
// one completes nothing, silently).
func TestComplete(t *testing.T) {
	r := &runner{env: Env{NATSURL: closedPort(t), AccessKey: "AK", SecretKey: "SK"}}
	cmds := r.app().Commands
	for _, tt := range []struct {
		words []string
		want  string
	}{
		{[]string{""}, "run start ps admin events rm info logs download ls completion"},
		{[]string{"r"}, "run rm"},
		{[]string{"admin", ""}, "session image keypair policy agent"},
		{[]string{"admin", "session", ""}, "list"},
		{[]string{"logs", "--f"}, "--follow"},
		{[]string{"ps", "--w"}, "--wide"},
		{[]string{"run", "--output", ""}, "text json"},
		{[]string{"run", "--type", "b"}, "batch"},
		{[]string{"ps", "-s", "RUN"}, "RUNNING"},
		{[]string{"--output", "json", "p"}, "ps"},
		{[]string{"run", "-r", "cpu=1", "--startup"}, "--startup-command"},
		{[]string{"rm", ""}, ""},              // no server: nothing
		{[]string{"run", ""}, ""},             // no server: nothing
		{[]string{"run", "python", "./"}, ""}, // files: the shell's
	} {
		got := strings.Join(r.complete(context.Background(), cmds, tt.words), " ")
		if got != tt.want {
			t.Errorf("complete %q = %q, want %q", tt.words, got, tt.want)
		}
	}
}
