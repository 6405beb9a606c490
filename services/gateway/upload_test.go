package gateway

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/bai-sh/bai/pkg/events"
)

// TestUploadRefusesBadNames: a run id or a file name that could leave the
// work directory or mangle a path (a '/', "..", a newline, a control
// character, too long, too deep) is refused with code 400 and a message
// naming it; nothing is stored in the upload store or on the log. The same
// names in an execute request are refused too.
func TestUploadRefusesBadNames(t *testing.T) {
	f := start(t, func(c *Config) { c.IdleTimeout = -1 })
	f.running(t, "s1")
	// The store exists (an upload creates it); it holds this one file.
	if err := f.call(t, events.OpSessionUpload, events.UploadRequest{SessionID: "s1", RunID: "ok", Path: "a/b.py", Data: []byte("1")}, nil); err != nil {
		t.Fatal(err)
	}
	before := f.count(t)
	deep := strings.Repeat("d/", events.MaxUploadDepth) + "f"
	for name, c := range map[string]struct {
		run, path, want string
	}{
		"run id with slash":     {"x/y", "a", "run id"},
		"run id dot-dot":        {"..", "a", "run id"},
		"run id newline":        {"x\n", "a", "run id"},
		"run id too long":       {strings.Repeat("r", events.MaxTokenLen+1), "a", "run id"},
		"path newline":          {"r", "a\nb", "control character"},
		"path carriage return":  {"r", "x\r", "control character"},
		"path escape":           {"r", "\x1b[2Jx", "control character"},
		"path NUL":              {"r", "a\x00", "NUL"},
		"path absolute":         {"r", "/etc/cron.d/x", "absolute"},
		"path dot-dot":          {"r", "a/../../x", "stay in the work directory"},
		"path empty component":  {"r", "a//b", "stay in the work directory"},
		"path too deep":         {"r", deep, "components"},
		"path too long":         {"r", strings.Repeat("x", events.MaxUploadPath+1), "bytes"},
		"path backslash":        {"r", `a\b`, "backslash"},
		"path empty":            {"r", "", "bytes"},
		"path dot":              {"r", ".", "stay in the work directory"},
		"path trailing slash":   {"r", "a/", "stay in the work directory"},
		"path dot component":    {"r", "a/./b", "stay in the work directory"},
		"path unicode line sep": {"r", "a\u0085b", "control character"},
	} {
		err := f.call(t, events.OpSessionUpload, events.UploadRequest{SessionID: "s1", RunID: c.run, Path: c.path, Data: []byte("x")}, nil)
		if !errors.Is(err, events.ErrInvalid) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("upload %s: %v, want a 400 about %q", name, err, c.want)
		}
		if c.path == "" || c.run != "r" {
			continue
		}
		err = f.call(t, events.OpSessionExecute, events.ExecuteRequest{SessionID: "s1", Run: events.RunSpec{ID: "r", Exec: "true", Files: []string{c.path}}}, nil)
		if !errors.Is(err, events.ErrInvalid) {
			t.Errorf("execute with file %s: %v, want 400", name, err)
		}
	}
	// Raw bytes that are not UTF-8 (a JSON encoder would have replaced
	// them with U+FFFD, and so would the gateway's decoder).
	for _, op := range []string{events.OpSessionUpload, events.OpSessionExecute} {
		subj, _ := events.APISubject(ak, op)
		body := `{"session_id":"s1","run_id":"r","path":"\xffa","data":"eA==","run":{"id":"r","exec":"true","files":["\xffa"]}}`
		msg, err := requestAs(f.nc, ak, subj, []byte(strings.ReplaceAll(body, `\xff`, "\xff")))
		if err != nil {
			t.Fatal(err)
		}
		if err := events.ErrorFromHeader(map[string][]string(msg.Header)); !errors.Is(err, events.ErrInvalid) || !strings.Contains(err.Error(), "not UTF-8") {
			t.Errorf("%s with a name that is not UTF-8: %v, want 400", op, err)
		}
	}
	if n := f.count(t); n != before {
		t.Errorf("bad requests published %d messages", n-before)
	}
	obs, err := f.js.ObjectStore(context.Background(), events.UploadBucket)
	if err != nil {
		t.Fatal(err)
	}
	infos, err := obs.List(context.Background())
	if err != nil && !errors.Is(err, jetstream.ErrNoObjectsFound) {
		t.Fatal(err)
	}
	var got []string
	for _, i := range infos {
		got = append(got, i.Name)
	}
	if want := events.UploadObject(ak, "s1", "ok", "a/b.py"); len(got) != 1 || got[0] != want {
		t.Errorf("upload store holds %q, want only %q", got, want)
	}
}
