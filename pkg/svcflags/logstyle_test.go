package svcflags

import (
	"flag"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

var fixMessages = flag.Bool("fix", false, "rewrite the log messages that are not snake_case")

// msgRE finds a zerolog message: .Msg("...") or .Msgf("...").
var msgRE = regexp.MustCompile(`\.Msgf?\("([^"\\]*)"`)

// goodMsg is a constant snake_case message, optionally followed by ": "
// and words for a human (e.g. "agents_not_judged: the bucket ...").
var goodMsg = regexp.MustCompile(`^[a-z0-9]+(_[a-z0-9]+)*(: .*)?$`)

// notYet are files another change splits now; run with -fix after it.
var notYet = map[string]bool{}

// snake makes m a snake_case message, keeping a ": detail" tail.
func snake(m string) string {
	head, tail, hasTail := strings.Cut(m, ": ")
	var b strings.Builder
	under := false
	for _, r := range strings.ToLower(head) {
		if ('a' <= r && r <= 'z') || ('0' <= r && r <= '9') {
			if under && b.Len() > 0 {
				b.WriteByte('_')
			}
			under = false
			b.WriteRune(r)
			continue
		}
		under = true
	}
	if hasTail {
		return b.String() + ": " + tail
	}
	return b.String()
}

// TestLogMessages: every service logs constant snake_case messages
// (STYLE.md), so that a log search by message finds every line of a
// kind. With -fix it rewrites the others.
func TestLogMessages(t *testing.T) {
	root := filepath.Join("..", "..")
	for _, dir := range []string{"services", "server", "pkg"} {
		err := filepath.WalkDir(filepath.Join(root, dir), func(path string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
				return err
			}
			rel, _ := filepath.Rel(root, path)
			rel = filepath.ToSlash(rel)
			data, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			changed := false
			out := msgRE.ReplaceAllStringFunc(string(data), func(s string) string {
				m := msgRE.FindStringSubmatch(s)[1]
				if goodMsg.MatchString(m) || strings.Contains(s, "Msgf") {
					return s
				}
				if *fixMessages && !notYet[rel] {
					changed = true
					return strings.Replace(s, `"`+m+`"`, `"`+snake(m)+`"`, 1)
				}
				if !notYet[rel] {
					t.Errorf("%s: log message %q is not snake_case (want %q; go test -run TestLogMessages -fix rewrites it)", rel, m, snake(m))
				}
				return s
			})
			if changed {
				return os.WriteFile(path, []byte(out), 0o644)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}

func TestSnake(t *testing.T) {
	for in, want := range map[string]string{
		"agent ready":                             "agent_ready",
		"session log consumer lost, recreating":   "session_log_consumer_lost_recreating",
		"execution ended after its session: exit": "execution_ended_after_its_session: exit",
		"auth_ready":                              "auth_ready",
	} {
		if got := snake(in); got != want {
			t.Errorf("snake(%q) = %q, want %q", in, got, want)
		}
	}
}
