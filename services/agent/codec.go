package agent

// The services' JSON codec is goccy/go-json (package fastjson): every
// event and record here goes through events.Marshal and events.Unmarshal.
import _ "github.com/bai-sh/bai/pkg/events/fastjson"
