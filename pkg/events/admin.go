package events

import "time"

// Admin API operations (admin keypairs only): keypairs and resource
// policies, answered by the gateway from the keypairs KV bucket.
const (
	OpKeypairAdd    = "keypair.add"
	OpKeypairList   = "keypair.list"
	OpKeypairInfo   = "keypair.info"
	OpKeypairRemove = "keypair.rm"
	OpKeypairRotate = "keypair.rotate"
	OpPolicyAdd     = "policy.add"
	OpPolicyList    = "policy.list"
	OpPolicySet     = "policy.set"
)

// KeypairInfo is a keypair as the admin API shows it; SecretKey is set
// only in the answer to keypair.add and keypair.rotate.
type KeypairInfo struct {
	AccessKey string    `json:"access_key"`
	SecretKey string    `json:"secret_key,omitempty"`
	UserID    string    `json:"user_id"`
	Email     string    `json:"email,omitempty"`
	Domain    string    `json:"domain"`
	Groups    []string  `json:"groups,omitempty"`
	Role      string    `json:"role"`
	Policy    string    `json:"policy"`
	CreatedAt time.Time `json:"created_at"`
	RotatedAt time.Time `json:"rotated_at,omitzero"`
}

// KeypairAddRequest asks for a new keypair (keypair.add).
type KeypairAddRequest struct {
	UserID string   `json:"user_id,omitempty"`
	Email  string   `json:"email,omitempty"`
	Domain string   `json:"domain,omitempty"`
	Groups []string `json:"groups,omitempty"`
	Role   string   `json:"role,omitempty"` // user (default) or admin
	Policy string   `json:"policy,omitempty"`
}

// KeypairRequest names one keypair (keypair.info, keypair.rm,
// keypair.rotate).
type KeypairRequest struct {
	AccessKey string `json:"access_key"`
}

// KeypairListResponse answers keypair.list.
type KeypairListResponse struct {
	Keypairs []KeypairInfo `json:"keypairs"`
}

// PolicyInfo is a resource policy. Zero limits are no limits.
type PolicyInfo struct {
	Name                  string            `json:"name"`
	MaxConcurrentSessions int               `json:"max_concurrent_sessions,omitempty"`
	MaxPendingSessions    int               `json:"max_pending_sessions,omitempty"`
	TotalSlots            map[string]string `json:"total_resource_slots,omitempty"`
	IdleTimeout           int               `json:"idle_timeout,omitempty"`         // seconds
	MaxSessionLifetime    int               `json:"max_session_lifetime,omitempty"` // seconds
}

// PolicyListResponse answers policy.list.
type PolicyListResponse struct {
	Policies []PolicyInfo `json:"policies"`
}
