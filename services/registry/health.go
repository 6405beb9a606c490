package registry

import "strconv"

// status is what the registry says of itself in its micro stats: the
// last session log sequence it applied (the gateway's admin.health
// compares it with the log's last).
func (s *Service) status() map[string]string {
	return map[string]string{"applied_seq": strconv.FormatUint(s.applied.Load(), 10)}
}
