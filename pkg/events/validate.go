package events

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// The names a client picks that end up in a path on an agent: a run id
// (the long code file ".bai-run-<run id>" in the work directory, the
// output subject's last token) and an uploaded file's path. The gateway
// checks both at admission; the agent checks them again before it touches
// a file.

// CheckRunID validates a run id: a subject token (1 to MaxTokenLen
// letters, digits, '-' or '_'), so it holds no '/', '.', newline, NUL or
// other control character.
func CheckRunID(id string) error {
	if !ValidToken(id) {
		return fmt.Errorf("%w: run id %q: 1 to %d letters, digits, '-' or '_'", ErrInvalid, clipName(id), MaxTokenLen)
	}
	return nil
}

// CheckUploadPath validates an upload path: 1 to MaxUploadPath bytes of
// UTF-8, relative and slash-separated, at most MaxUploadDepth components
// of at most MaxUploadName bytes each, none empty, "." or "..", and no
// NUL, backslash, newline or other control character anywhere.
func CheckUploadPath(p string) error { return checkPath("upload path", p) }

// checkPath is CheckUploadPath's rules, its errors naming the path kind.
func checkPath(kind, p string) error {
	switch {
	case p == "" || len(p) > MaxUploadPath:
		return fmt.Errorf("%w: %s %q: 1 to %d bytes", ErrInvalid, kind, clipName(p), MaxUploadPath)
	case !utf8.ValidString(p):
		return fmt.Errorf("%w: %s %q is not UTF-8", ErrInvalid, kind, clipName(p))
	case strings.HasPrefix(p, "/"):
		return fmt.Errorf("%w: %s %q is absolute", ErrInvalid, kind, clipName(p))
	case strings.ContainsAny(p, "\x00\\"):
		return fmt.Errorf("%w: %s %q has a NUL or a backslash", ErrInvalid, kind, clipName(p))
	case strings.IndexFunc(p, unicode.IsControl) >= 0:
		return fmt.Errorf("%w: %s %q has a newline or another control character", ErrInvalid, kind, clipName(p))
	}
	parts := strings.Split(p, "/")
	if len(parts) > MaxUploadDepth {
		return fmt.Errorf("%w: %s %q has %d components (at most %d)", ErrInvalid, kind, clipName(p), len(parts), MaxUploadDepth)
	}
	for _, c := range parts {
		switch {
		case c == "" || c == "." || c == "..":
			return fmt.Errorf("%w: %s %q must be clean and stay in the work directory", ErrInvalid, kind, clipName(p))
		case len(c) > MaxUploadName:
			return fmt.Errorf("%w: %s %q has a component over %d bytes", ErrInvalid, kind, clipName(p), MaxUploadName)
		}
	}
	return nil
}

// clipName cuts a refused name to 64 bytes for its error message.
func clipName(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}
