package events

import (
	"fmt"
	"io/fs"
	"strings"
	"time"
)

// Files out of a session: `bai download` and `bai ls`. A tenant asks the
// gateway (bai.api.<ak>.session.download, .files); the gateway finds the
// session's agent in the log (its session_scheduled, under the caller's
// own key, or another's for an admin) and asks that agent with a core
// NATS request (AgentFilesSubject), which only the gateway may publish
// and only that agent reads. The agent answers on the gateway's service
// inbox only (AgentReplyAllowed), reading the kernel's work directory
// without following a symlink. Nothing is stored: a file comes one chunk
// per request, so no side holds more than MaxDownloadChunk of it.

// API operations of files out (answered by the gateway).
const (
	OpSessionDownload = "session.download" // one chunk of one file
	OpSessionFiles    = "session.files"    // a directory listing
)

// Limits of files out.
const (
	// MaxDownloadFile is the largest file a download returns (64 MiB);
	// a larger one is refused with its size.
	MaxDownloadFile = 64 << 20
	// MaxDownloadChunk is the most bytes of a file one request returns
	// (base64 in JSON: under NATS's 1 MiB message limit).
	MaxDownloadChunk = 512 << 10
	// MaxDownloadFiles is the most files one `bai download` fetches.
	MaxDownloadFiles = 100
	// MaxListEntries is the most entries one listing returns; more
	// sets FilesResponse.Truncated.
	MaxListEntries = 1000
	// MaxLinkTarget is the most bytes of a symlink's target a listing
	// shows; a longer one is cut.
	MaxLinkTarget = 255
)

// CheckFilePath validates a path of a file in a session's work directory
// to download or list: CheckUploadPath's rules (relative, clean, no "..",
// no control character).
func CheckFilePath(p string) error { return checkPath("path", p) }

// DownloadRequest asks for one chunk of a regular file of a session's
// work directory (bai.api.<ak>.session.download), from Offset on.
type DownloadRequest struct {
	SessionID string `json:"session_id"`
	// AccessKey names another key's session: admins only. Empty: the
	// caller's own.
	AccessKey string `json:"access_key,omitempty"`
	Path      string `json:"path"` // CheckFilePath's rules
	Offset    int64  `json:"offset,omitempty"`
}

// DownloadResponse is one chunk of a file: Data holds the bytes from
// Offset on (at most MaxDownloadChunk), Size and MTime describe the whole
// file as it was when the chunk was read (a client that sees them change
// between chunks starts again), EOF is set on the last chunk.
type DownloadResponse struct {
	Path   string    `json:"path"`
	Size   int64     `json:"size"`
	Mode   string    `json:"mode"` // permission bits, octal ("0644")
	MTime  time.Time `json:"mtime"`
	Offset int64     `json:"offset"`
	Data   []byte    `json:"data"`
	EOF    bool      `json:"eof,omitempty"`
}

// FilesRequest asks for the entries of a directory of a session's work
// directory (bai.api.<ak>.session.files); Path "" is the work directory
// itself. A path naming a file or a symlink lists that one entry.
type FilesRequest struct {
	SessionID string `json:"session_id"`
	AccessKey string `json:"access_key,omitempty"` // admins only
	Path      string `json:"path,omitempty"`       // "" or CheckFilePath's rules
}

// File types of a FileInfo.
const (
	FileRegular = "file"
	FileDir     = "dir"
	FileSymlink = "symlink"
	FileOther   = "other" // a fifo, socket or device
)

// FileInfo is one entry of a listing, as lstat(2) sees it: a symlink is
// listed as itself, with its target, never followed.
type FileInfo struct {
	Name   string    `json:"name"`
	Type   string    `json:"type"`
	Size   int64     `json:"size"`
	Mode   string    `json:"mode"` // ls -l style, "-rw-r--r--"
	MTime  time.Time `json:"mtime"`
	Target string    `json:"target,omitempty"` // a symlink's, at most MaxLinkTarget bytes
}

// FilesResponse answers a FilesRequest, entries sorted by name.
type FilesResponse struct {
	SessionID string     `json:"session_id"`
	Path      string     `json:"path"`
	Files     []FileInfo `json:"files"`
	Truncated bool       `json:"truncated,omitempty"`
}

// CheckFileInfo validates one entry of an agent's listing before it is
// passed on or shown: a single path component (no '/', not "." or "..",
// 1 to MaxUploadName bytes, no NUL) of a known type.
func CheckFileInfo(f FileInfo) error {
	switch {
	case f.Name == "" || f.Name == "." || f.Name == ".." || len(f.Name) > MaxUploadName ||
		strings.ContainsAny(f.Name, "/\x00"):
		return fmt.Errorf("%w: file name %q", ErrInvalid, clipName(f.Name))
	case f.Type != FileRegular && f.Type != FileDir && f.Type != FileSymlink && f.Type != FileOther:
		return fmt.Errorf("%w: file %q of unknown type %q", ErrInvalid, clipName(f.Name), clipName(f.Type))
	case f.Size < 0 || len(f.Target) > MaxLinkTarget:
		return fmt.Errorf("%w: file %q: bad size or link target", ErrInvalid, clipName(f.Name))
	}
	return nil
}

// FileType names the type of mode as FileInfo.Type does.
func FileType(mode fs.FileMode) string {
	switch {
	case mode.IsRegular():
		return FileRegular
	case mode.IsDir():
		return FileDir
	case mode&fs.ModeSymlink != 0:
		return FileSymlink
	}
	return FileOther
}

// The gateway's requests to an agent.
const (
	AgentFilesRead = "read" // a DownloadResponse
	AgentFilesList = "list" // a FilesResponse
)

// AgentFilesSubject is where agent agentID answers the gateway's file
// requests (verb AgentFilesRead or AgentFilesList): only the gateway may
// publish there, only that agent subscribes.
//
//	bai.agent.<agent_id>.files.<verb>
func AgentFilesSubject(agentID, verb string) (string, error) {
	if err := checkTokens("agent files", agentID, verb); err != nil {
		return "", err
	}
	return "bai.agent." + agentID + ".files." + verb, nil
}

// AgentFilesPattern matches one verb of every agent's file requests (what
// the gateway may publish).
//
//	bai.agent.*.files.<verb>
func AgentFilesPattern(verb string) string { return "bai.agent.*.files." + verb }

// AgentFilesRequest is the gateway's request to the agent of a session:
// read a chunk (Offset) or list (Path "" for the work directory) in the
// work directory of kernel KernelID of session SessionID of AccessKey.
// The gateway checked the caller may; the agent checks the kernel is its
// own, running, and that session's.
type AgentFilesRequest struct {
	AccessKey string `json:"access_key"`
	SessionID string `json:"session_id"`
	KernelID  string `json:"kernel_id"`
	Path      string `json:"path,omitempty"`
	Offset    int64  `json:"offset,omitempty"`
}

// gatewayService is the gateway's service name: its connection's reply
// inbox is ServiceInboxPrefix(gatewayService).
const gatewayService = "gateway"

// AgentReplyAllowed reports whether an agent may answer a file request on
// reply: a literal subject under the gateway's inbox,
// ServiceInboxPrefix("gateway") + ".".
func AgentReplyAllowed(reply string) bool {
	return underPrefix(reply, ServiceInboxPrefix(gatewayService)+".")
}
