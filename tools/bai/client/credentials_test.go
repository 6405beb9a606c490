package client

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestParseCredentials(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want Credentials
	}{
		{"empty", "", Credentials{}},
		{"one line", "export BAI_NATS_URL=nats://h:4222 BAI_ACCESS_KEY=AK BAI_SECRET_KEY=SK\n",
			Credentials{"nats://h:4222", "AK", "SK"}},
		{"bai-server's file", "# bai credentials, written by bai-server. Use: source /x/credentials.env\n" +
			"export BAI_NATS_URL=nats://127.0.0.1:4222\nexport BAI_ACCESS_KEY=AKIA0123456789ABCDEF\n" +
			"export BAI_SECRET_KEY=abcdefghijABCDEFGHIJ0123456789abcdefghij\n",
			Credentials{"nats://127.0.0.1:4222", "AKIA0123456789ABCDEF", "abcdefghijABCDEFGHIJ0123456789abcdefghij"}},
		{"no export", "BAI_ACCESS_KEY=AK\nBAI_SECRET_KEY=SK", Credentials{AccessKey: "AK", SecretKey: "SK"}},
		{"single quotes", "export BAI_SECRET_KEY='a b#c\"d'", Credentials{SecretKey: `a b#c"d`}},
		{"double quotes", `export BAI_SECRET_KEY="a \"b\" \\ \$x \n"`, Credentials{SecretKey: `a "b" \ $x \n`}},
		{"escaped quote", `export BAI_SECRET_KEY='it'\''s'`, Credentials{SecretKey: "it's"}},
		{"bare escape", `export BAI_SECRET_KEY=a\ b`, Credentials{SecretKey: "a b"}},
		{"comments and blanks", "\n  # a comment\n\texport BAI_ACCESS_KEY=AK # trailing\n\n",
			Credentials{AccessKey: "AK"}},
		{"hash inside a word", "export BAI_SECRET_KEY=a#b", Credentials{SecretKey: "a#b"}},
		{"crlf", "export BAI_ACCESS_KEY=AK\r\nexport BAI_SECRET_KEY=SK\r\n", Credentials{AccessKey: "AK", SecretKey: "SK"}},
		{"later wins", "export BAI_ACCESS_KEY=A1\nexport BAI_ACCESS_KEY=A2", Credentials{AccessKey: "A2"}},
		{"unknown names ignored", "export FOO=bar BAI_ACCESS_KEY=AK", Credentials{AccessKey: "AK"}},
		{"empty value", "export BAI_ACCESS_KEY= BAI_SECRET_KEY=''", Credentials{}},
		{"value with =", "export BAI_SECRET_KEY=a=b=", Credentials{SecretKey: "a=b="}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseCredentials([]byte(tt.in))
			if err != nil {
				t.Fatalf("ParseCredentials: %v", err)
			}
			if got != tt.want {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestParseCredentialsErrors(t *testing.T) {
	tests := []struct{ name, in string }{
		{"not an assignment", "export BAI_ACCESS_KEY"},
		{"bare word", "hello"},
		{"bad name", "export 1A=b"},
		{"empty name", "export =b"},
		{"unterminated single", "export BAI_SECRET_KEY='abc"},
		{"unterminated double", `export BAI_SECRET_KEY="abc`},
		{"error on line 2", "export BAI_ACCESS_KEY=AK\nexport BAI_SECRET_KEY"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseCredentials([]byte(tt.in))
			if !errors.Is(err, ErrCredentials) {
				t.Fatalf("err = %v, want ErrCredentials", err)
			}
		})
	}
}

func TestFormatCredentialsRoundTrip(t *testing.T) {
	for _, c := range []Credentials{
		{},
		{"nats://u:p@127.0.0.1:4222", "AKIA0123456789ABCDEF", "s3cr3t"},
		{"x", `it's "quoted" $HOME \ `, " spaced # out "},
	} {
		data, err := FormatCredentials(c)
		if err != nil {
			t.Fatalf("FormatCredentials(%+v): %v", c, err)
		}
		got, err := ParseCredentials(data)
		if err != nil || got != c {
			t.Fatalf("round trip of %+v through %q: got %+v, %v", c, data, got, err)
		}
	}
	if _, err := FormatCredentials(Credentials{SecretKey: "a\nb"}); !errors.Is(err, ErrCredentials) {
		t.Fatalf("newline in a value: err = %v, want ErrCredentials", err)
	}
}

func TestReadCredentials(t *testing.T) {
	dir := t.TempDir()
	path := CredentialsPath(dir)
	if _, err := ReadCredentials(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing file: err = %v, want ErrNotExist", err)
	}
	if err := os.WriteFile(path, []byte("export BAI_ACCESS_KEY='AK'\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := ReadCredentials(path)
	if err != nil || c.AccessKey != "AK" {
		t.Fatalf("ReadCredentials = %+v, %v", c, err)
	}
	if err := os.WriteFile(path, []byte("garbage\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadCredentials(path); !errors.Is(err, ErrCredentials) {
		t.Fatalf("bad file: err = %v, want ErrCredentials", err)
	}
}

func TestDataDir(t *testing.T) {
	env := func(m map[string]string) func(string) string { return func(k string) string { return m[k] } }
	tests := []struct {
		name string
		env  map[string]string
		want string
	}{
		{"xdg", map[string]string{"XDG_DATA_HOME": "/x", "HOME": "/h"}, filepath.FromSlash("/x/bai")},
		{"home", map[string]string{"HOME": "/h"}, filepath.FromSlash("/h/.local/share/bai")},
		{"none", nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := DataDir(env(tt.env)); got != tt.want {
				t.Fatalf("DataDir = %q, want %q", got, tt.want)
			}
		})
	}
}

func FuzzParseCredentials(f *testing.F) {
	f.Add("export BAI_NATS_URL=nats://h:4222 BAI_ACCESS_KEY=AK BAI_SECRET_KEY='S K'\n", "AK", "s'k")
	f.Add(`export BAI_SECRET_KEY="a \"b\"" # c`, "", `\`)
	f.Add("#\n\r\n'\"\\", "x y", "$z")
	f.Fuzz(func(t *testing.T, in, ak, sk string) {
		// Any input: no panic, and an error always wraps ErrCredentials.
		if _, err := ParseCredentials([]byte(in)); err != nil && !errors.Is(err, ErrCredentials) {
			t.Fatalf("error %v does not wrap ErrCredentials", err)
		}
		// Whatever FormatCredentials writes reads back the same.
		c := Credentials{NATSURL: in, AccessKey: ak, SecretKey: sk}
		data, err := FormatCredentials(c)
		if err != nil {
			return // a newline, CR or NUL
		}
		got, err := ParseCredentials(data)
		if err != nil || got != c {
			t.Fatalf("round trip of %+v through %q: got %+v, %v", c, data, got, err)
		}
	})
}
