package events

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestReplyAllowed(t *testing.T) {
	const ak, other = "AKIAAAAAAAAAAAAAAAAA", "AKIABBBBBBBBBBBBBBBB"
	own := InboxPrefix(ak)
	for reply, want := range map[string]bool{
		own + ".x":                           true,
		own + ".aBc123.7":                    true,
		own:                                  false,
		own + ".":                            false,
		own + "..x":                          false,
		own + ".x.":                          false,
		own + ".*":                           false,
		own + ".>":                           false,
		own + ".x.>":                         false,
		own + ".x y":                         false,
		own + ".x\ty":                        false,
		own + "x":                            false, // another prefix that starts alike
		InboxPrefix(other) + ".x":            false,
		"_INBOX_" + ak + ".x":                false, // the old shape
		"_INBOX.x":                           false,
		"":                                   false,
		"$JS.API.STREAM.DELETE.KV_x":         false,
		"$KV.bai_keypairs.ak." + ak:          false,
		"$O.bai_uploads.M.x":                 false,
		"bai.session." + ak + ".s.e":         false,
		"bai.out." + ak + ".s.r":             false,
		ServiceInboxPrefix("gateway") + ".x": false,
		own + "." + strings.Repeat("x", 300): false,
	} {
		if got := ReplyAllowed(ak, reply); got != want {
			t.Errorf("ReplyAllowed(%q) = %v, want %v", reply, got, want)
		}
	}
	if ReplyAllowed("a.b", InboxPrefix("a.b")+".x") || ReplyAllowed("", InboxPrefix("")+".x") {
		t.Error("an invalid access key has an inbox")
	}
}

func TestServiceReplyAllowed(t *testing.T) {
	for reply, want := range map[string]bool{
		ServiceInboxPrefix("gateway") + ".x.y":     true,
		ServiceInboxPrefix("gateway"):              false,
		ServiceInboxPrefix("") + ".x":              false,
		"_INBOX_SVC_.x":                            false,
		ServiceInboxPrefix("gateway") + ".>":       false,
		InboxPrefix("AKIAAAAAAAAAAAAAAAAA") + ".x": false,
		"$JS.API.STREAM.DELETE.BAI_SESSIONS":       false,
	} {
		if got := ServiceReplyAllowed(reply); got != want {
			t.Errorf("ServiceReplyAllowed(%q) = %v, want %v", reply, got, want)
		}
	}
}

// TestRequestReplyAllowed: an API subject is answered on its key's own
// inbox only, a service API subject on a service's inbox only.
func TestRequestReplyAllowed(t *testing.T) {
	const ak = "AKIAAAAAAAAAAAAAAAAA"
	api, _ := APISubject(ak, OpSessionGet)
	internal, _ := ServiceAPISubject(ak, OpSessionGet)
	cases := []struct {
		subj, reply string
		ok          bool
	}{
		{api, InboxPrefix(ak) + ".r", true},
		{api, ServiceInboxPrefix("gateway") + ".r", false},
		{internal, ServiceInboxPrefix("gateway") + ".r", true},
		{internal, InboxPrefix(ak) + ".r", false},
		{"bai.api.a.b", InboxPrefix(ak) + ".r", false},
		{"bai.internal." + ak + ".x", ServiceInboxPrefix("gateway") + ".r", false},
		{"bai.session." + ak + ".s.e", InboxPrefix(ak) + ".r", false},
	}
	for _, c := range cases {
		gotAK, ok := RequestReplyAllowed(c.subj, c.reply)
		if ok != c.ok || (ok && gotAK != ak) {
			t.Errorf("RequestReplyAllowed(%q, %q) = %q, %v; want %v", c.subj, c.reply, gotAK, ok, c.ok)
		}
	}
	if ak2, op, isInternal, err := ParseRequestSubject(internal); err != nil || ak2 != ak || op != OpSessionGet || !isInternal {
		t.Errorf("ParseRequestSubject(%q) = %q %q %v %v", internal, ak2, op, isInternal, err)
	}
}

func TestErrorBody(t *testing.T) {
	var r ErrorReply
	if err := json.Unmarshal(ErrorBody(CodeNotFound, `session "x" not found`), &r); err != nil ||
		r.Error.Code != CodeNotFound || r.Error.Description != `session "x" not found` {
		t.Fatalf("%+v %v", r, err)
	}
}
