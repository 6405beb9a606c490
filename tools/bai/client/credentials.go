package client

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// ErrCredentials: the credentials file is malformed or unreadable.
var ErrCredentials = errors.New("bad credentials file")

// The variables of a credentials file (and of the environment).
const (
	EnvNATSURL   = "BAI_NATS_URL"
	EnvAccessKey = "BAI_ACCESS_KEY"
	EnvSecretKey = "BAI_SECRET_KEY"
)

// CredentialsFileName is the credentials file's name in the data dir.
const CredentialsFileName = "credentials.env"

// Credentials are what a credentials file holds; empty fields were absent.
type Credentials struct {
	NATSURL   string
	AccessKey string
	SecretKey string
}

// DataDir is bai's per-user data directory: $XDG_DATA_HOME/bai, else
// $HOME/.local/share/bai; "" when neither variable is set. getenv is
// os.Getenv or a stand-in.
func DataDir(getenv func(string) string) string {
	if d := getenv("XDG_DATA_HOME"); d != "" {
		return filepath.Join(d, "bai")
	}
	if h := getenv("HOME"); h != "" {
		return filepath.Join(h, ".local", "share", "bai")
	}
	return ""
}

// CredentialsPath is the credentials file in dataDir.
func CredentialsPath(dataDir string) string {
	return filepath.Join(dataDir, CredentialsFileName)
}

// ReadCredentials reads and parses a credentials file. A missing file
// gives an error wrapping fs.ErrNotExist.
func ReadCredentials(path string) (Credentials, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Credentials{}, err
	}
	c, err := ParseCredentials(data)
	if err != nil {
		return Credentials{}, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

// ParseCredentials parses a credentials file: shell lines such as
//
//	export BAI_NATS_URL=nats://127.0.0.1:4222 BAI_ACCESS_KEY=AK BAI_SECRET_KEY='s3cr3t'
//
// in one or several lines, each optionally starting with "export", holding
// NAME=VALUE words. Values may be quoted as the shell does ('...' literal,
// "..." with \ escaping \ " $ and `, a bare \ escaping the next character);
// nothing is expanded. Blank lines and # comments are skipped, unknown
// names ignored, and a later assignment wins.
func ParseCredentials(data []byte) (Credentials, error) {
	var c Credentials
	for i, line := range strings.Split(string(data), "\n") {
		words, err := shellWords(strings.TrimSuffix(line, "\r"))
		if err != nil {
			return Credentials{}, fmt.Errorf("%w: line %d: %v", ErrCredentials, i+1, err)
		}
		if len(words) > 0 && words[0] == "export" {
			words = words[1:]
		}
		for _, w := range words {
			name, value, ok := strings.Cut(w, "=")
			if !ok || !validName(name) {
				return Credentials{}, fmt.Errorf("%w: line %d: %q is not NAME=VALUE", ErrCredentials, i+1, w)
			}
			switch name {
			case EnvNATSURL:
				c.NATSURL = value
			case EnvAccessKey:
				c.AccessKey = value
			case EnvSecretKey:
				c.SecretKey = value
			}
		}
	}
	return c, nil
}

func validName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '_', c >= 'A' && c <= 'Z', c >= 'a' && c <= 'z':
		case c >= '0' && c <= '9' && i > 0:
		default:
			return false
		}
	}
	return true
}

// shellWords splits one line into words with the shell's quoting rules
// (no expansion); a word starting with # begins a comment.
func shellWords(line string) ([]string, error) {
	var (
		words []string
		cur   strings.Builder
		in    bool // inside a word
	)
	for i := 0; i < len(line); i++ {
		c := line[i]
		switch {
		case c == ' ' || c == '\t':
			if in {
				words = append(words, cur.String())
				cur.Reset()
				in = false
			}
		case c == '#' && !in:
			return words, nil
		case c == '\\':
			in = true
			if i+1 < len(line) {
				i++
				cur.WriteByte(line[i])
			}
		case c == '\'':
			in = true
			j := strings.IndexByte(line[i+1:], '\'')
			if j < 0 {
				return nil, errors.New("unterminated ' quote")
			}
			cur.WriteString(line[i+1 : i+1+j])
			i += j + 1
		case c == '"':
			in = true
			closed := false
			for i++; i < len(line); i++ {
				c = line[i]
				if c == '"' {
					closed = true
					break
				}
				if c == '\\' && i+1 < len(line) && strings.IndexByte("\\\"$`", line[i+1]) >= 0 {
					i++
					c = line[i]
				}
				cur.WriteByte(c)
			}
			if !closed {
				return nil, errors.New(`unterminated " quote`)
			}
		default:
			in = true
			cur.WriteByte(c)
		}
	}
	if in {
		words = append(words, cur.String())
	}
	return words, nil
}

// FormatCredentials writes c as one export line that ParseCredentials (and
// a POSIX shell) reads back. Values may not hold a newline, carriage
// return or NUL.
func FormatCredentials(c Credentials) ([]byte, error) {
	var b strings.Builder
	b.WriteString("export")
	for _, kv := range [][2]string{{EnvNATSURL, c.NATSURL}, {EnvAccessKey, c.AccessKey}, {EnvSecretKey, c.SecretKey}} {
		if strings.ContainsAny(kv[1], "\n\r\x00") {
			return nil, fmt.Errorf("%w: %s holds a newline or NUL", ErrCredentials, kv[0])
		}
		b.WriteString(" " + kv[0] + "='" + strings.ReplaceAll(kv[1], "'", `'\''`) + "'")
	}
	b.WriteString("\n")
	return []byte(b.String()), nil
}
