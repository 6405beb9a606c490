package server

import (
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/bai-sh/bai/services/gateway"
	"github.com/bai-sh/bai/tools/bai/client"
)

// Credentials is a keypair: an access key (AKIA and 16 more characters)
// and a 40-character secret.
type Credentials struct {
	AccessKey string
	SecretKey string
}

// NewCredentials makes a fresh random keypair.
func NewCredentials() Credentials {
	return Credentials{AccessKey: gateway.NewAccessKey(), SecretKey: gateway.NewSecretKey()}
}

// loadOrCreateCredentials reads the keypair from the credentials file at
// path (the same file bai reads), or makes one at first start.
func loadOrCreateCredentials(path string) (Credentials, error) {
	c, err := client.ReadCredentials(path)
	if errors.Is(err, fs.ErrNotExist) {
		return NewCredentials(), nil
	}
	if err != nil {
		return Credentials{}, fmt.Errorf("server: credentials: %w", err)
	}
	if len(c.AccessKey) != 20 || len(c.SecretKey) != 40 {
		return Credentials{}, fmt.Errorf("server: credentials %s: no valid BAI_ACCESS_KEY and BAI_SECRET_KEY (remove the file to make new ones)", path)
	}
	return Credentials{AccessKey: c.AccessKey, SecretKey: c.SecretKey}, nil
}

// writeCredentials writes the shell line bai reads, readable by the owner
// only.
func writeCredentials(path, url string, c Credentials) error {
	line, err := client.FormatCredentials(client.Credentials{NATSURL: url, AccessKey: c.AccessKey, SecretKey: c.SecretKey})
	if err != nil {
		return fmt.Errorf("server: credentials: %w", err)
	}
	content := append([]byte("# bai credentials, written by bai-server; bai reads this file, or: source "+path+"\n"), line...)
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, content, 0o600); err != nil {
		return fmt.Errorf("server: write credentials: %w", err)
	}
	if err := os.Chmod(tmp, 0o600); err != nil {
		return fmt.Errorf("server: write credentials: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("server: write credentials: %w", err)
	}
	return nil
}
