package events

import (
	"time"
)

// ExecuteRequest asks to run code in a live session
// (bai.api.<ak>.session.execute). Image, when set, must resolve to the
// session's image (Backend.AI's reuse rule: same name, same image).
type ExecuteRequest struct {
	SessionID string  `json:"session_id"`
	Image     string  `json:"image,omitempty"`
	Run       RunSpec `json:"run"`
}

// ExecuteResponse answers an ExecuteRequest.
type ExecuteResponse struct {
	SessionID string `json:"session_id"`
	RunID     string `json:"run_id"`
	AgentID   string `json:"agent_id"`
}

// OutputChunk is one output message of a run, as session.logs returns it.
type OutputChunk struct {
	RunID    string    `json:"run_id"`
	Stream   string    `json:"stream"` // StreamStdout, StreamStderr or StreamExit
	Data     string    `json:"data,omitempty"`
	ExitCode *int      `json:"exit_code,omitempty"`
	Time     time.Time `json:"time"`
	// Chunk is the chunk's number in its run and stream (HeaderChunk);
	// 0 when unknown.
	Chunk uint64 `json:"chunk,omitempty"`
}

// LogsResponse is a session's output so far (session.logs), oldest first.
// Truncated is true when older output was left out to fit one reply.
type LogsResponse struct {
	SessionID string        `json:"session_id"`
	Chunks    []OutputChunk `json:"chunks"`
	Truncated bool          `json:"truncated,omitempty"`
}

// SessionFields are the names `ps -f` and `info` know, in the manual
// page's order.
var SessionFields = []string{
	"id", "main_kernel_id", "tag", "name", "type", "image", "registry",
	"cluster_template", "cluster_mode", "cluster_size", "domain_name",
	"group_name", "group_id", "agent_ids", "user_email", "user_id",
	"access_key", "status", "status_info", "status_changed", "created_at",
	"terminated_at", "starts_at", "scheduled_at", "startup_command", "result",
	"resource_opts", "scaling_group", "service_ports", "mounts",
	"occupying_slots", "dependencies", "abusing_reports", "idle_checks",
}

// Upload limits (CheckUploadPath has the rules of a path).
const (
	MaxUploadFile  = 512 << 10 // one file, sent in one request (base64 in JSON: under 1 MiB)
	MaxUploadFiles = 100       // files of one run
	MaxUploadPath  = 255       // bytes of a path
	MaxUploadName  = 255       // bytes of one path component (Linux's NAME_MAX)
	MaxUploadDepth = 16        // components of a path
)

// UploadBucket is the object store that holds uploaded files, each under
// UploadObject's name until the agent fetches it.
const UploadBucket = "bai_uploads"

// UploadObject names an uploaded file in UploadBucket.
func UploadObject(ak, sid, runID, path string) string {
	return ak + "/" + sid + "/" + runID + "/" + path
}

// UploadRequest sends one file for run RunID of session SessionID
// (bai.api.<ak>.session.upload); the session need not exist yet.
type UploadRequest struct {
	SessionID string `json:"session_id"`
	RunID     string `json:"run_id"`
	Path      string `json:"path"` // CheckUploadPath's rules
	Data      []byte `json:"data"`
}

// UploadResponse answers an UploadRequest.
type UploadResponse struct {
	Path string `json:"path"`
	Size int    `json:"size"`
}

// ImageInfo is one image the gateway admits and the aliases that name it.
type ImageInfo struct {
	Name    string   `json:"name"`
	Aliases []string `json:"aliases"`
}

// ImageListResponse answers image.list, images sorted by name.
type ImageListResponse struct {
	Images []ImageInfo `json:"images"`
}

// ImageAliasRequest points Alias at the full image Target (image.alias).
type ImageAliasRequest struct {
	Alias  string `json:"alias"`
	Target string `json:"target"`
}
