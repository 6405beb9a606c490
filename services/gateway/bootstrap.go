package gateway

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
)

// BootstrapAdmin makes sure the keypair in the credentials file at path is
// an admin: the first admin of a cluster of separate processes, where no
// bai-server makes one. With no file there it makes a new keypair, writes
// the file (0600, the shell line bai reads: BAI_NATS_URL=clientURL when
// given, BAI_ACCESS_KEY, BAI_SECRET_KEY) and stores the keypair as an
// admin; with the file there it stores its keypair again only if the
// keypairs bucket lost it or its admin role (idempotent: a restart changes
// nothing). created says whether the file was made now. A file that holds
// no keypair is an error and changes nothing.
func (k *Keys) BootstrapAdmin(ctx context.Context, path, clientURL string) (ak string, created bool, err error) {
	data, err := os.ReadFile(path)
	var sk string
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if strings.ContainsAny(clientURL, "'\n\r\x00") {
			return "", false, fmt.Errorf("gateway: bootstrap admin: client URL %q holds a quote or a newline", clientURL)
		}
		ak, sk = NewAccessKey(), NewSecretKey()
		line := "export"
		if clientURL != "" {
			line += " BAI_NATS_URL='" + clientURL + "'"
		}
		line += " BAI_ACCESS_KEY='" + ak + "' BAI_SECRET_KEY='" + sk + "'\n"
		content := "# The first admin keypair of this bai cluster, written by bai-gateway --bootstrap-admin-file.\n" +
			"# bai reads it (bai --credentials " + path + "), or: source it. Keep it 0600; make named admins\n" +
			"# with bai admin keypair add --role admin, then remove this one.\n" + line
		if err := writePrivate(path, []byte(content)); err != nil {
			return "", false, fmt.Errorf("gateway: bootstrap admin: %w", err)
		}
		created = true
	case err != nil:
		return "", false, fmt.Errorf("gateway: bootstrap admin: %w", err)
	default:
		if ak, sk, err = parseBootstrapFile(data); err != nil {
			return "", false, fmt.Errorf("gateway: bootstrap admin %s: %w", path, err)
		}
	}
	if err := k.EnsureAdmin(ctx, ak, sk); err != nil {
		return "", created, fmt.Errorf("gateway: bootstrap admin: %w", err)
	}
	return ak, created, nil
}

var (
	akWord = regexp.MustCompile(`BAI_ACCESS_KEY='?([A-Za-z0-9]+)'?`)
	skWord = regexp.MustCompile(`BAI_SECRET_KEY='?([A-Za-z0-9]+)'?`)
)

func parseBootstrapFile(data []byte) (ak, sk string, err error) {
	a, s := akWord.FindSubmatch(data), skWord.FindSubmatch(data)
	if a == nil || s == nil || len(a[1]) != AccessKeyLen || len(s[1]) != SecretKeyLen {
		return "", "", errors.New("no BAI_ACCESS_KEY and BAI_SECRET_KEY of a bai keypair in it (remove the file to make a new admin)")
	}
	return string(a[1]), string(s[1]), nil
}

func writePrivate(path string, content []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, content, 0o600); err != nil {
		return err
	}
	if err := os.Chmod(tmp, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
