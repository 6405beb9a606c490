package gateway

import (
	"crypto/rand"
	"encoding/hex"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/bai-sh/bai/pkg/events"
	"github.com/bai-sh/bai/pkg/slots"
)

// forbiddenEnv are variables a session may not set: they would let code
// escape the image's environment or impersonate the system's own.
var forbiddenEnv = map[string]bool{
	"PATH": true, "HOME": true, "USER": true, "LOGNAME": true, "SHELL": true,
	"TMPDIR": true, "PWD": true, "IFS": true, "BASH_ENV": true, "ENV": true,
	"PYTHONPATH": true, "PYTHONHOME": true, "PYTHONSTARTUP": true,
}

// forbiddenEnvPrefixes are variable prefixes a session may not set.
var forbiddenEnvPrefixes = []string{"LD_", "BAI_", "NATS_", "DYLD_"}

// admit validates a create request and resolves it into a session spec.
// Every error wraps events.ErrInvalid and names the offending field.
func (s *Service) admit(ak string, cr *events.CreateRequest) (*events.SessionSpec, error) {
	id := cr.SessionID
	if id == "" {
		id = newUUID()
	} else if !events.ValidToken(id) {
		return nil, events.Errorf(events.ErrInvalid, "invalid session id %q: use 1-64 letters, digits, '-' or '_'", clip(id))
	}
	name := cr.Name
	if name == "" {
		short := strings.ReplaceAll(id, "-", "")
		name = "bai-" + short[:min(8, len(short))]
	} else if err := checkName(name); err != nil {
		return nil, err
	}
	image, err := s.resolveImage(cr.Image)
	if err != nil {
		return nil, err
	}
	req, err := slots.ParseList(cr.Slots)
	if err != nil {
		return nil, events.Errorf(events.ErrInvalid, "resource slots: %v", err)
	}
	if req == nil {
		req = slots.Set{}
	}
	for k, q := range s.defaults {
		if _, ok := req[k]; !ok {
			req[k] = q
		}
	}
	if err := checkEnv(cr.Env); err != nil {
		return nil, err
	}
	if len(cr.Tag) > events.MaxTagLen || !printable(cr.Tag) {
		return nil, events.Errorf(events.ErrInvalid, "invalid tag: at most %d printable characters", events.MaxTagLen)
	}
	typ := cr.Type
	switch typ {
	case "":
		typ = events.TypeInteractive
	case events.TypeInteractive, events.TypeBatch:
	default:
		return nil, events.Errorf(events.ErrInvalid, "invalid session type %q: use interactive or batch", clip(string(typ)))
	}
	if typ == events.TypeBatch && strings.TrimSpace(cr.StartupCommand) == "" {
		return nil, events.Errorf(events.ErrInvalid, "a batch session needs a startup command")
	}
	if err := checkCommand("startup command", cr.StartupCommand); err != nil {
		return nil, err
	}
	if cr.Priority != nil && (*cr.Priority < events.MinPriority || *cr.Priority > events.MaxPriority) {
		return nil, events.Errorf(events.ErrInvalid, "invalid priority %d: use %d to %d", *cr.Priority, events.MinPriority, events.MaxPriority)
	}
	if cr.BatchTimeout < 0 || cr.BatchTimeout > 0 && typ != events.TypeBatch {
		return nil, events.Errorf(events.ErrInvalid, "a batch timeout must be positive and given for a batch session")
	}
	if len(cr.Depends) > events.MaxDepends {
		return nil, events.Errorf(events.ErrInvalid, "too many dependencies: at most %d", events.MaxDepends)
	}
	for _, d := range cr.Depends {
		if !events.ValidToken(d) {
			return nil, events.Errorf(events.ErrInvalid, "invalid dependency %q: give session ids", clip(d))
		}
	}
	if cr.Run != nil {
		if err := checkRun(cr.Run); err != nil {
			return nil, err
		}
	}
	return &events.SessionSpec{
		ID:             id,
		Name:           name,
		AccessKey:      ak,
		Image:          image,
		RequestedImage: cr.Image,
		Type:           typ,
		Slots:          req.Map(),
		Env:            cr.Env,
		Tag:            cr.Tag,
		Domain:         s.cfg.Domain,
		Group:          s.cfg.Group,
		ScalingGroup:   s.cfg.ScalingGroup,
		StartupCommand: cr.StartupCommand,
		MainKernelID:   newUUID(),
		CreatedAt:      time.Now().UTC(),
		Run:            cr.Run,
		Priority:       cr.Priority,
		StartsAt:       cr.StartsAt,
		Depends:        cr.Depends,
		BatchTimeout:   cr.BatchTimeout,
		Network:        cr.Network,
	}, nil
}

// checkName applies the session name rules: 1-64 characters, letters,
// digits, '-', '_' and '.', starting with a letter or digit.
func checkName(name string) error {
	ok := len(name) <= events.MaxNameLen
	for i := 0; ok && i < len(name); i++ {
		c := name[i]
		alnum := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
		ok = alnum || (i > 0 && (c == '-' || c == '_' || c == '.'))
	}
	if !ok {
		return events.Errorf(events.ErrInvalid, "invalid session name %q: use 1-%d letters, digits, '-', '_' or '.', starting with a letter or digit", clip(name), events.MaxNameLen)
	}
	return nil
}

func checkEnv(env map[string]string) error {
	if len(env) > events.MaxEnvVars {
		return events.Errorf(events.ErrInvalid, "too many environment variables (at most %d)", events.MaxEnvVars)
	}
	for k, v := range env {
		if !envKey(k) {
			return events.Errorf(events.ErrInvalid, "invalid environment variable name %q", clip(k))
		}
		if forbiddenEnv[k] {
			return events.Errorf(events.ErrInvalid, "environment variable %s may not be set", k)
		}
		for _, p := range forbiddenEnvPrefixes {
			if strings.HasPrefix(k, p) {
				return events.Errorf(events.ErrInvalid, "environment variable %s may not be set (%s* is reserved)", k, p)
			}
		}
		if len(v) > events.MaxEnvLen || strings.ContainsRune(v, 0) || !utf8.ValidString(v) {
			return events.Errorf(events.ErrInvalid, "invalid value for environment variable %s", k)
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

func checkRun(r *events.RunSpec) error {
	if !events.ValidToken(r.ID) {
		return events.Errorf(events.ErrInvalid, "invalid run id %q", clip(r.ID))
	}
	if strings.TrimSpace(r.Code) == "" && strings.TrimSpace(r.Exec) == "" {
		return events.Errorf(events.ErrInvalid, "empty code: nothing to run")
	}
	if err := checkCommand("code", r.Code); err != nil {
		return err
	}
	return checkCommand("exec command", r.Exec)
}

func checkCommand(what, s string) error {
	if len(s) > events.MaxCodeLen {
		return events.Errorf(events.ErrInvalid, "%s too long: %d bytes (at most %d)", what, len(s), events.MaxCodeLen)
	}
	if strings.ContainsRune(s, 0) || !utf8.ValidString(s) {
		return events.Errorf(events.ErrInvalid, "%s must be UTF-8 text without NUL bytes", what)
	}
	return nil
}

func printable(s string) bool {
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

// clip shortens s for an error message.
func clip(s string) string {
	if len(s) > 80 {
		return s[:80] + "..."
	}
	return s
}

// newUUID returns a random (version 4) UUID.
func newUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}
