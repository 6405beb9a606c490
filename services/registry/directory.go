package registry

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/bai-sh/bai/pkg/events"
)

// The directory: domains, groups (projects), scaling groups and users, with
// a "default" of each created at first start. Sessions name their domain,
// group and scaling group; queries add the ids and the owner's user.
var bucketDirectory = []byte("directory")

// DefaultName is the name of the default domain, group and scaling group.
const DefaultName = "default"

// dirEntry is one directory object.
type dirEntry struct {
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	Domain    string    `json:"domain,omitempty"` // a group's domain
	Email     string    `json:"email,omitempty"`  // a user's
	Role      string    `json:"role,omitempty"`   // a user's: "admin" or "user"
	CreatedAt time.Time `json:"created_at"`
}

func dirKey(kind, name string) []byte { return []byte(kind + "/" + name) }

func getDir(b *bolt.Bucket, kind, name string) (dirEntry, bool) {
	var e dirEntry
	v := b.Get(dirKey(kind, name))
	if v == nil || events.Unmarshal(v, &e) != nil {
		return e, false
	}
	return e, true
}

func putDirIfAbsent(b *bolt.Bucket, kind string, e dirEntry) error {
	if b.Get(dirKey(kind, e.Name)) != nil {
		return nil
	}
	if e.ID == "" {
		e.ID = newUUID()
	}
	e.CreatedAt = time.Now().UTC()
	v, err := events.Marshal(e)
	if err != nil {
		return err
	}
	return b.Put(dirKey(kind, e.Name), v)
}

// initDirectory creates the default domain, group and scaling group, and
// the admin's user.
func initDirectory(tx *bolt.Tx, adminAK string) error {
	b := tx.Bucket(bucketDirectory)
	for _, x := range []struct {
		kind string
		e    dirEntry
	}{
		{"domain", dirEntry{Name: DefaultName}},
		{"group", dirEntry{Name: DefaultName, Domain: DefaultName}},
		{"scaling_group", dirEntry{Name: DefaultName}},
	} {
		if err := putDirIfAbsent(b, x.kind, x.e); err != nil {
			return fmt.Errorf("registry directory: %w", err)
		}
	}
	if adminAK != "" {
		return ensureUser(tx, adminAK, "admin")
	}
	return nil
}

// ensureUser gives access key ak a user the first time it is seen.
func ensureUser(tx *bolt.Tx, ak, role string) error {
	if role == "" {
		role = "user"
	}
	email := strings.ToLower(ak) + "@bai.local"
	if role == "admin" {
		email = "admin@bai.local"
	}
	return putDirIfAbsent(tx.Bucket(bucketDirectory), "user", dirEntry{Name: ak, Email: email, Role: role})
}

// decorate fills the fields of info that the directory and the clock
// give, at query time.
func decorate(tx *bolt.Tx, info *events.SessionInfo, idleTimeout time.Duration, now time.Time) {
	b := tx.Bucket(bucketDirectory)
	if g, ok := getDir(b, "group", info.Group); ok {
		info.GroupID = g.ID
	}
	if u, ok := getDir(b, "user", info.AccessKey); ok {
		info.UserID, info.UserEmail = u.ID, u.Email
	}
	info.Registry = imageRegistry(info.Image)
	info.ClusterMode, info.ClusterSize = "single-node", 1
	info.AgentIDs = nil
	if info.AgentID != "" {
		info.AgentIDs = []string{info.AgentID}
	}
	info.ResourceOpts = map[string]any{}
	info.ServicePorts = []any{}
	info.Mounts = []string{}
	info.Dependencies = []string{}
	info.AbusingReports = []any{}
	info.IdleChecks = map[string]any{}
	if idleTimeout > 0 && info.LastActivity != nil && info.Status == events.StatusRunning {
		remaining := idleTimeout - now.Sub(*info.LastActivity)
		if remaining < 0 {
			remaining = 0
		}
		info.IdleChecks["idle_timeout"] = map[string]any{
			"threshold":     idleTimeout.Seconds(),
			"remaining":     remaining.Truncate(time.Second).Seconds(),
			"last_activity": info.LastActivity.UTC().Format(time.RFC3339Nano),
		}
	}
}

// imageRegistry is the registry part of an image reference: the first
// path component when it names a host, else docker.io.
func imageRegistry(image string) string {
	host, _, ok := strings.Cut(image, "/")
	if ok && (strings.ContainsAny(host, ".:") || host == "localhost") {
		return host
	}
	return "docker.io"
}

func newUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}
