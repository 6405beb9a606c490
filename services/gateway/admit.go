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
	} else if err := events.CheckSessionName(name); err != nil {
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
	if err := s.caps.check(s.cfg.ScalingGroup, req); err != nil {
		return nil, err
	}
	if err := events.CheckEnv(cr.Env); err != nil {
		return nil, err
	}
	if err := events.CheckTag(cr.Tag); err != nil {
		return nil, err
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
