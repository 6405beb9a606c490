package cli

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/bai-sh/bai/pkg/events"
)

// field is one session field that ps -f and info know.
type field struct {
	name  string // as -f takes it
	title string // the column header
	value func(s *events.SessionInfo) any
}

func timeValue(t *time.Time) any {
	if t == nil || t.IsZero() {
		return nil
	}
	return *t
}

// fields are events.SessionFields with their headers and values.
var fields = []field{
	{"id", "Session ID", func(s *events.SessionInfo) any { return s.ID }},
	{"main_kernel_id", "Main Kernel ID", func(s *events.SessionInfo) any { return s.MainKernelID }},
	{"tag", "Tag", func(s *events.SessionInfo) any { return s.Tag }},
	{"name", "Name", func(s *events.SessionInfo) any { return s.Name }},
	{"type", "Type", func(s *events.SessionInfo) any { return string(s.Type) }},
	{"image", "Image", func(s *events.SessionInfo) any { return s.Image }},
	{"registry", "Registry", func(s *events.SessionInfo) any { return s.Registry }},
	{"cluster_template", "Cluster Template", func(s *events.SessionInfo) any { return nil }}, // reserved
	{"cluster_mode", "Cluster Mode", func(s *events.SessionInfo) any { return s.ClusterMode }},
	{"cluster_size", "Cluster Size", func(s *events.SessionInfo) any { return s.ClusterSize }},
	{"domain_name", "Domain Name", func(s *events.SessionInfo) any { return s.Domain }},
	{"group_name", "Project/Group", func(s *events.SessionInfo) any { return s.Group }},
	{"group_id", "Project/Group ID", func(s *events.SessionInfo) any { return s.GroupID }},
	{"agent_ids", "Agent IDs", func(s *events.SessionInfo) any { return orEmpty(s.AgentIDs) }},
	{"user_email", "User Email", func(s *events.SessionInfo) any { return s.UserEmail }},
	{"user_id", "User ID", func(s *events.SessionInfo) any { return s.UserID }},
	{"access_key", "Owner Access Key", func(s *events.SessionInfo) any { return s.AccessKey }},
	{"status", "Status", func(s *events.SessionInfo) any { return string(s.Status) }},
	{"status_info", "Status Info", func(s *events.SessionInfo) any { return s.StatusInfo }},
	{"status_changed", "Last Updated", func(s *events.SessionInfo) any { return timeValue(&s.StatusChanged) }},
	{"created_at", "Created At", func(s *events.SessionInfo) any { return timeValue(&s.CreatedAt) }},
	{"terminated_at", "Terminated At", func(s *events.SessionInfo) any { return timeValue(s.TerminatedAt) }},
	{"starts_at", "Starts At", func(s *events.SessionInfo) any { return timeValue(s.StartsAt) }},
	{"scheduled_at", "Scheduled At", func(s *events.SessionInfo) any { return timeValue(s.ScheduledAt) }},
	{"startup_command", "Startup Command", func(s *events.SessionInfo) any { return s.StartupCommand }},
	{"result", "Result", func(s *events.SessionInfo) any { return string(s.Result) }},
	{"resource_opts", "Resource Opts", func(s *events.SessionInfo) any { return orEmptyMap(s.ResourceOpts) }},
	{"scaling_group", "Scaling Group", func(s *events.SessionInfo) any { return s.ScalingGroup }},
	{"service_ports", "Service Ports", func(s *events.SessionInfo) any { return orEmpty(s.ServicePorts) }},
	{"mounts", "Mounts", func(s *events.SessionInfo) any { return orEmpty(s.Mounts) }},
	{"occupying_slots", "Occupying Slots", func(s *events.SessionInfo) any { return s.Slots }},
	{"dependencies", "Dependencies", func(s *events.SessionInfo) any { return orEmpty(s.Dependencies) }},
	{"abusing_reports", "Abusing Reports", func(s *events.SessionInfo) any { return orEmpty(s.AbusingReports) }},
	{"idle_checks", "Idle Checks", func(s *events.SessionInfo) any { return orEmptyMap(s.IdleChecks) }},
}

func orEmpty[T any](v []T) []T {
	if v == nil {
		return []T{}
	}
	return v
}

func orEmptyMap(v map[string]any) map[string]any {
	if v == nil {
		return map[string]any{}
	}
	return v
}

var fieldsByName = func() map[string]*field {
	m := make(map[string]*field, len(fields)+1)
	for i := range fields {
		m[fields[i].name] = &fields[i]
	}
	m["session_id"] = m["id"]
	return m
}()

func fieldNames() string {
	names := make([]string, len(fields))
	for i, f := range fields {
		names[i] = f.name
	}
	return strings.Join(names, ", ")
}

// parseFields parses -f's comma-separated list.
func parseFields(s string) ([]*field, error) {
	var out []*field
	for _, name := range strings.Split(s, ",") {
		name = strings.TrimSpace(name)
		f, ok := fieldsByName[name]
		if !ok {
			return nil, invalidf("unknown field %q (valid fields: %s)", name, fieldNames())
		}
		out = append(out, f)
	}
	return out, nil
}

// mustFields is parseFields for names known to be valid.
func mustFields(names ...string) []*field {
	out := make([]*field, len(names))
	for i, n := range names {
		out[i] = fieldsByName[n]
	}
	return out
}

// text renders a field value for a table cell.
func text(v any) string {
	switch x := v.(type) {
	case nil:
		return ""
	case string:
		return x
	case int:
		return strconv.Itoa(x)
	case time.Time:
		return formatTime(x)
	}
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	return string(b)
}
