package natsconf

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/nats-io/nkeys"

	"github.com/bai-sh/bai/pkg/events/perms"
)

// The files Secrets writes (all 0600).
const (
	// NATSEnvFile is the nats-server's environment: every password and
	// the issuer's public key.
	NATSEnvFile = "nats.env"
	// IssuerSeedFile is the auth callout's account seed: only for the
	// gateway(s) that run the callout (bai-gateway --auth-issuer-seed-file).
	IssuerSeedFile = "auth-issuer.seed"
)

// ServiceEnvFile is the environment file of a service or agent user
// (gateway.env, ops.env, agents/<id>.env): its BAI_NATS_URL with its
// password.
func ServiceEnvFile(user string) string {
	if id, ok := strings.CutPrefix(user, "bai-agent-"); ok {
		return filepath.Join("agents", id+".env")
	}
	return strings.TrimPrefix(user, "bai-") + ".env"
}

// Secrets writes the installation's secrets into dir: NATSEnvFile,
// IssuerSeedFile, and ServiceEnvFile per user of Users(spec). It keeps
// every secret already there (a rerun, e.g. after adding an agent, makes
// only the missing ones) and rewrites the derived service files. Every
// file is readable by its owner only.
func Secrets(dir string, spec Spec) error {
	users, err := Users(spec)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Join(dir, "agents"), 0o700); err != nil {
		return fmt.Errorf("natsconf: secrets dir: %w", err)
	}
	env, err := readEnv(filepath.Join(dir, NATSEnvFile))
	if err != nil {
		return err
	}
	seedPath := filepath.Join(dir, IssuerSeedFile)
	seed, err := os.ReadFile(seedPath)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		kp, err := nkeys.CreateAccount()
		if err != nil {
			return fmt.Errorf("natsconf: issuer nkey: %w", err)
		}
		if seed, err = kp.Seed(); err != nil {
			return fmt.Errorf("natsconf: issuer nkey: %w", err)
		}
		if err := writeFile(seedPath, append(seed, '\n')); err != nil {
			return err
		}
	case err != nil:
		return fmt.Errorf("natsconf: issuer seed: %w", err)
	}
	kp, err := nkeys.FromSeed(bytes.TrimSpace(seed))
	if err != nil {
		return fmt.Errorf("natsconf: issuer seed %s: %w", seedPath, err)
	}
	pub, err := kp.PublicKey()
	if err != nil || !nkeys.IsValidPublicAccountKey(pub) {
		return fmt.Errorf("natsconf: issuer seed %s is not an account nkey", seedPath)
	}
	env[IssuerVar] = pub
	keys := []string{IssuerVar}
	for _, u := range users {
		v := PasswordVar(u.Name)
		if env[v] == "" {
			env[v] = newPassword()
		}
		keys = append(keys, v)
	}
	var b strings.Builder
	b.WriteString("# nats-server's environment, written by bai-deploy secrets: the NATS users'\n# passwords and the auth callout's issuer (public key). Keep it 0600.\n")
	for _, k := range keys {
		fmt.Fprintf(&b, "%s=%s\n", k, env[k])
	}
	if err := writeFile(filepath.Join(dir, NATSEnvFile), []byte(b.String())); err != nil {
		return err
	}
	for _, u := range users {
		content := fmt.Sprintf("# %s's NATS connection, written by bai-deploy secrets. Keep it 0600.\nBAI_NATS_URL=%s\n",
			u.Name, ClientURLs(spec, u.Name, env[PasswordVar(u.Name)]))
		if strings.HasPrefix(u.Name, perms.RegistryDurable) {
			content += "BAI_REGISTRY_DURABLE=" + u.Name + "\n"
		}
		if err := writeFile(filepath.Join(dir, ServiceEnvFile(u.Name)), []byte(content)); err != nil {
			return err
		}
	}
	return nil
}

// ClientURLs is the comma-separated URL list of every node of spec, with
// user and password in each (the services' BAI_NATS_URL).
func ClientURLs(spec Spec, user, password string) string {
	_ = spec.fill()
	var urls []string
	for _, n := range spec.Nodes {
		u := url.URL{Scheme: "nats", User: url.UserPassword(user, password), Host: n.Host + ":" + strconv.Itoa(n.ClientPort)}
		urls = append(urls, u.String())
	}
	return strings.Join(urls, ",")
}

// ReadEnv reads a KEY=VALUE file (comments and blank lines skipped); a
// missing file is empty.
func ReadEnv(path string) (map[string]string, error) { return readEnv(path) }

func readEnv(path string) (map[string]string, error) {
	env := map[string]string{}
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return env, nil
	}
	if err != nil {
		return nil, fmt.Errorf("natsconf: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("natsconf: %s line %d: not KEY=VALUE", path, n)
		}
		env[k] = v
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("natsconf: %s: %w", path, err)
	}
	return env, nil
}

// newPassword is 32 random hex digits (128 bits; no character a URL or
// a shell would quote).
func newPassword() string {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		panic("crypto/rand: " + err.Error())
	}
	return hex.EncodeToString(b)
}

// writeFile writes content to path, 0600, through a rename.
func writeFile(path string, content []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, content, 0o600); err != nil {
		return fmt.Errorf("natsconf: %w", err)
	}
	if err := os.Chmod(tmp, 0o600); err != nil {
		return fmt.Errorf("natsconf: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("natsconf: %w", err)
	}
	return nil
}
