package cli

import (
	"strings"
	"testing"
)

// TestHelp: the help printer (no templates) shows every section urfave's
// templates did.
func TestHelpPrinter(t *testing.T) {
	for _, tt := range []struct {
		args []string
		want []string
	}{
		{[]string{"--help"}, []string{"NAME:\n   bai - compute sessions", "USAGE:\n   bai [global options] command [command options]\n",
			"VERSION:\n   " + Version + "\n", "COMMANDS:\n   run         start a session", "   completion  print the shell completion",
			"GLOBAL OPTIONS:\n   --nats URL ", "   --help, -h "}},
		{[]string{"ps", "--help"}, []string{"NAME:\n   bai ps - list your sessions", "USAGE:\n   bai ps [command options]\n",
			"DESCRIPTION:\n   Lists sessions", "\n\n   Fields for -f: id,", "OPTIONS:\n   --running ", "   --wide ", "   --status STATUS[,STATUS...], -s STATUS[,STATUS...]  only"}},
		{[]string{"admin"}, []string{"USAGE:\n   bai admin command [command options]\n", "COMMANDS:\n   session "}},
		{[]string{"logs", "--help"}, []string{"USAGE:\n   bai logs [command options] ID|NAME\n", "--follow, -f "}},
	} {
		code, out, errOut := run(t, Env{}, tt.args...)
		if code != 0 || errOut != "" {
			t.Fatalf("%v: %d %q", tt.args, code, errOut)
		}
		for _, w := range tt.want {
			if !strings.Contains(out, w) {
				t.Errorf("%v: no %q in\n%s", tt.args, w, out)
			}
		}
		if strings.Contains(out, " \n") {
			t.Errorf("%v: trailing spaces in\n%q", tt.args, out)
		}
	}
}
