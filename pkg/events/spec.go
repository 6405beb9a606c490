package events

import (
	"strings"
	"unicode/utf8"
)

// The environment a session may not set: variables that would let code
// escape the image's environment or impersonate the system's own, and
// whole prefixes of them (the loader's LD_*, bai's and NATS's own).
var (
	forbiddenEnv = map[string]bool{
		"PATH": true, "HOME": true, "USER": true, "LOGNAME": true, "SHELL": true,
		"TMPDIR": true, "PWD": true, "IFS": true, "BASH_ENV": true, "ENV": true,
		"PYTHONPATH": true, "PYTHONHOME": true, "PYTHONSTARTUP": true,
	}
	forbiddenEnvPrefixes = []string{"LD_", "BAI_", "NATS_", "DYLD_"}
)

// CheckEnv applies the environment rules of a session: at most
// MaxEnvVars variables, names of letters, digits and '_' not starting
// with a digit, none of the reserved names or prefixes, values of UTF-8
// text without NUL of at most MaxEnvLen bytes. The error is an ErrInvalid
// APIError naming the variable.
func CheckEnv(env map[string]string) error {
	if len(env) > MaxEnvVars {
		return Errorf(ErrInvalid, "too many environment variables (at most %d)", MaxEnvVars)
	}
	for k, v := range env {
		if !envKey(k) {
			return Errorf(ErrInvalid, "invalid environment variable name %q", clipText(k))
		}
		if forbiddenEnv[k] {
			return Errorf(ErrInvalid, "environment variable %s may not be set", k)
		}
		for _, p := range forbiddenEnvPrefixes {
			if strings.HasPrefix(k, p) {
				return Errorf(ErrInvalid, "environment variable %s may not be set (%s* is reserved)", k, p)
			}
		}
		if len(v) > MaxEnvLen || strings.ContainsRune(v, 0) || !utf8.ValidString(v) {
			return Errorf(ErrInvalid, "invalid value for environment variable %s", k)
		}
	}
	return nil
}

func envKey(k string) bool {
	if k == "" || len(k) > 128 {
		return false
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		if !(c == '_' || c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || i > 0 && c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

// CheckSessionName applies the session name rules: 1 to MaxNameLen
// letters, digits, '-', '_' and '.', starting with a letter or digit.
func CheckSessionName(name string) error {
	ok := name != "" && len(name) <= MaxNameLen
	for i := 0; ok && i < len(name); i++ {
		c := name[i]
		alnum := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
		ok = alnum || (i > 0 && (c == '-' || c == '_' || c == '.'))
	}
	if !ok {
		return Errorf(ErrInvalid, "invalid session name %q: use 1-%d letters, digits, '-', '_' or '.', starting with a letter or digit", clipText(name), MaxNameLen)
	}
	return nil
}

// CheckTag applies the tag rules: at most MaxTagLen bytes of printable
// UTF-8 text (no control characters). U+FFFD, the replacement character,
// is refused too: it is what a JSON decoder or encoder puts in place of
// bytes that are not UTF-8, so a tag holding it was not valid text when
// the user typed it.
func CheckTag(tag string) error {
	if len(tag) > MaxTagLen || !printableText(tag) || strings.ContainsRune(tag, utf8.RuneError) {
		return Errorf(ErrInvalid, "invalid tag: at most %d printable UTF-8 characters", MaxTagLen)
	}
	return nil
}

func printableText(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			return false
		}
	}
	return true
}

func checkText(what, s string) error {
	if len(s) > MaxCodeLen {
		return Errorf(ErrInvalid, "%s too long: %d bytes (at most %d)", what, len(s), MaxCodeLen)
	}
	if strings.ContainsRune(s, 0) || !utf8.ValidString(s) {
		return Errorf(ErrInvalid, "%s must be UTF-8 text without NUL bytes", what)
	}
	return nil
}

// Validate checks a session spec as the gateway admits one: a spec in a
// session_enqueued or session_scheduled that the gateway could not have
// written (a reserved environment variable such as LD_PRELOAD, a bad
// name, tag, kernel id, run...) is refused by every reader of the log, so
// that a publisher other than the gateway cannot smuggle one in. Fields
// the gateway always fills may be empty here; what is set must be valid.
func (sp *SessionSpec) Validate() error {
	switch {
	case !ValidToken(sp.ID):
		return Errorf(ErrInvalid, "invalid session id %q", clipText(sp.ID))
	case sp.AccessKey != "" && !ValidToken(sp.AccessKey):
		return Errorf(ErrInvalid, "invalid access key %q", clipText(sp.AccessKey))
	case sp.MainKernelID != "" && !ValidToken(sp.MainKernelID):
		return Errorf(ErrInvalid, "invalid kernel id %q", clipText(sp.MainKernelID))
	case sp.Type != "" && sp.Type != TypeInteractive && sp.Type != TypeBatch:
		return Errorf(ErrInvalid, "invalid session type %q", clipText(string(sp.Type)))
	case len(sp.Image) > MaxImageLen || !printableText(sp.Image) || len(sp.RequestedImage) > MaxImageLen || !printableText(sp.RequestedImage):
		return Errorf(ErrInvalid, "invalid image %q", clipText(sp.Image))
	case sp.Priority != nil && (*sp.Priority < MinPriority || *sp.Priority > MaxPriority):
		return Errorf(ErrInvalid, "invalid priority %d", *sp.Priority)
	case sp.BatchTimeout < 0:
		return Errorf(ErrInvalid, "negative batch timeout")
	case len(sp.Depends) > MaxDepends:
		return Errorf(ErrInvalid, "too many dependencies: at most %d", MaxDepends)
	}
	if sp.Name != "" {
		if err := CheckSessionName(sp.Name); err != nil {
			return err
		}
	}
	for _, d := range sp.Depends {
		if !ValidToken(d) {
			return Errorf(ErrInvalid, "invalid dependency %q", clipText(d))
		}
	}
	if err := CheckEnv(sp.Env); err != nil {
		return err
	}
	if len(sp.Tag) > MaxTagLen || !printableText(sp.Tag) {
		// Not CheckTag: a U+FFFD stored before the gateway refused it
		// must not make a log replay drop the session.
		return Errorf(ErrInvalid, "invalid tag")
	}
	if err := checkText("startup command", sp.StartupCommand); err != nil {
		return err
	}
	if r := sp.Run; r != nil {
		if !ValidToken(r.ID) {
			return Errorf(ErrInvalid, "invalid run id %q", clipText(r.ID))
		}
		if err := checkText("code", r.Code); err != nil {
			return err
		}
		if err := checkText("exec command", r.Exec); err != nil {
			return err
		}
	}
	return nil
}

// clipText shortens s for an error message.
func clipText(s string) string {
	if len(s) > 80 {
		return s[:80] + "..."
	}
	return s
}
