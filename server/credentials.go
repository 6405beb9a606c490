package server

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"os"

	"github.com/bai-sh/bai/tools/bai/client"
)

// Credentials is a keypair: an access key (AKIA and 16 more characters)
// and a 40-character secret.
type Credentials struct {
	AccessKey string
	SecretKey string
}

const (
	accessKeyAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
	secretAlphabet    = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
)

// NewCredentials makes a fresh random keypair.
func NewCredentials() Credentials {
	return Credentials{
		AccessKey: "AKIA" + randomString(accessKeyAlphabet, 16),
		SecretKey: randomString(secretAlphabet, 40),
	}
}

func randomString(alphabet string, n int) string {
	b := make([]byte, n)
	max := big.NewInt(int64(len(alphabet)))
	for i := range b {
		v, err := rand.Int(rand.Reader, max)
		if err != nil {
			panic(fmt.Sprintf("crypto/rand: %v", err)) // the kernel's RNG failing is not recoverable
		}
		b[i] = alphabet[v.Int64()]
	}
	return string(b)
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
