package events

import (
	"strings"
	"testing"
)

func TestFilesOutNames(t *testing.T) {
	if s, err := AgentFilesSubject("ag1", AgentFilesRead); err != nil || s != "bai.agent.ag1.files.read" {
		t.Errorf("subject %q %v", s, err)
	}
	for _, id := range []string{"", "a.b", "*", ">", "a b"} {
		if _, err := AgentFilesSubject(id, AgentFilesList); err == nil {
			t.Errorf("agent id %q accepted", id)
		}
	}
	for reply, want := range map[string]bool{
		"_INBOX_SVC_gateway.abc.1": true, "_INBOX_SVC_gateway.": false, "_INBOX_SVC_gateway.*": false,
		"_INBOX_SVC_registry.x": false, "_INBOX_KEY.AK.x": false, "_INBOX.x": false, "$JS.API.STREAM.DELETE.X": false, "": false,
	} {
		if got := AgentReplyAllowed(reply); got != want {
			t.Errorf("AgentReplyAllowed(%q) = %v", reply, got)
		}
	}
	for _, f := range []FileInfo{
		{Name: "", Type: FileRegular}, {Name: ".", Type: FileDir}, {Name: "..", Type: FileDir}, {Name: "a/b", Type: FileRegular},
		{Name: "a\x00", Type: FileRegular}, {Name: strings.Repeat("x", 256), Type: FileRegular}, {Name: "a", Type: "weird"},
		{Name: "a", Type: FileRegular, Size: -1}, {Name: "l", Type: FileSymlink, Target: strings.Repeat("t", 256)},
	} {
		if CheckFileInfo(f) == nil {
			t.Errorf("entry %+v accepted", f)
		}
	}
	if err := CheckFileInfo(FileInfo{Name: "ok \u00e9 \n name", Type: FileOther}); err != nil {
		t.Errorf("a name with a newline is still a name (shown quoted): %v", err)
	}
	if err := CheckFilePath("../x"); err == nil || !strings.Contains(err.Error(), "path \"../x\" must be clean") || strings.Contains(err.Error(), "upload") {
		t.Errorf("CheckFilePath: %v", err)
	}
}
