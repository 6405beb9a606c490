package agent

import (
	"slices"
	"strings"
	"testing"
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
