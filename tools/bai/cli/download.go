package cli

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/urfave/cli/v2"

	"github.com/bai-sh/bai/pkg/events"
	"github.com/bai-sh/bai/tools/bai/client"
)

// Files out: bai download and bai ls, Backend.AI's `download SESSID
// FILES... --dest DIR` and `ls SESSID [PATH]`. Paths are relative to the
// session's work directory; the server refuses "..", absolute paths and
// symlinks. A file comes a chunk at a time (events.MaxDownloadChunk)
// into a temporary file under --dest, renamed into place once whole, so
// an interrupted download leaves nothing half-written at the name. The
// local name is the path asked for, never a name from the answer, and it
// is written through os.Root: nothing lands outside --dest, not even
// through a symlink there.

func (r *runner) downloadCommand() *cli.Command {
	return &cli.Command{
		Name:      "download",
		Usage:     "copy files out of a running session's work directory",
		ArgsUsage: "ID|NAME PATH [PATH...]",
		Description: "Each PATH is relative to the session's work directory; the file lands at\n" +
			"the same relative path under --dest (default the current directory), its\n" +
			"directories made. Regular files only, at most 64 MiB each; a symlink in the\n" +
			"session is never followed (bai ls shows it). An existing local file is kept\n" +
			"unless --force.",
		Flags: append([]cli.Flag{
			&cli.StringFlag{Name: "dest", Value: ".", Usage: "write the files under `DIR` (made if missing)"},
			&cli.BoolFlag{Name: "force", Usage: "overwrite local files that exist"},
			accessKeyFlag(),
		}, globalFlags()...),
		Action: r.download,
	}
}

func (r *runner) lsCommand() *cli.Command {
	return &cli.Command{
		Name:      "ls",
		Usage:     "list a directory of a running session's work directory",
		ArgsUsage: "ID|NAME [PATH]",
		Description: "Lists PATH (default the work directory itself): name, type, size, mode and\n" +
			"modification time of each entry, a symlink as itself with its target (never\n" +
			"followed). A PATH naming a file lists that one entry.",
		Flags:  append([]cli.Flag{accessKeyFlag()}, globalFlags()...),
		Action: r.ls,
	}
}

// remotePath is the path a user typed, made clean ("./a//b" is "a/b")
// and checked: relative, inside the work directory.
func remotePath(p string) (string, error) {
	clean := p
	if p != "" && !strings.HasPrefix(p, "/") {
		clean = path.Clean(p)
	}
	if err := events.CheckFilePath(clean); err != nil {
		return "", invalidf("%v", strings.TrimPrefix(err.Error(), events.ErrInvalid.Error()+": "))
	}
	return clean, nil
}

// downloaded is one file written, as --output json prints it.
type downloaded struct {
	Path  string    `json:"path"`
	File  string    `json:"file"`
	Size  int64     `json:"size"`
	Mode  string    `json:"mode"`
	MTime time.Time `json:"mtime"`
}

func (r *runner) download(c *cli.Context) error {
	args, err := argsBetween(c, 2, events.MaxDownloadFiles+1, "ID|NAME PATH")
	if err != nil {
		return err
	}
	ref := args[0]
	if !validRef(ref) {
		return invalidf("invalid session id or name %q", ref)
	}
	var paths []string
	seen := map[string]bool{}
	for _, a := range args[1:] {
		p, err := remotePath(a)
		if err != nil {
			return err
		}
		if seen[p] {
			return invalidf("path %s given twice", a)
		}
		seen[p] = true
		paths = append(paths, p)
	}
	out, err := outputFormat(c)
	if err != nil {
		return err
	}
	dest := c.String("dest")
	if dest == "" {
		return invalidf("--dest is empty")
	}
	if err := os.MkdirAll(dest, 0o755); err != nil {
		return fmt.Errorf("destination: %w", err)
	}
	root, err := os.OpenRoot(dest)
	if err != nil {
		return fmt.Errorf("destination: %w", err)
	}
	defer root.Close()
	// Refuse what would overwrite before anything is fetched.
	if !c.Bool("force") {
		for _, p := range paths {
			if _, err := root.Lstat(filepath.FromSlash(p)); err == nil {
				return invalidf("%s exists (--force overwrites it)", filepath.Join(dest, filepath.FromSlash(p)))
			}
		}
	}
	cl, info, err := r.openSession(c, ref)
	if err != nil {
		return err
	}
	defer cl.Close()
	var first error
	for _, p := range paths {
		d, err := fetchFile(c.Context, cl, root, info, p)
		if err != nil {
			if first == nil {
				first = err
			}
			if c.Context.Err() != nil {
				return err
			}
			r.errorf("download %s: %v", p, err)
			continue
		}
		d.File = filepath.Join(dest, filepath.FromSlash(p))
		if out == "json" {
			if err := r.printJSON(d); err != nil {
				return err
			}
			continue
		}
		fmt.Fprintf(r.stdout, "%s -> %s (%d bytes)\n", p, d.File, d.Size)
	}
	if first != nil {
		return exitWith(exitCode(c.Context, first))
	}
	return nil
}

// fetchFile downloads rel of session info, a chunk at a time, into a
// temporary file under root, renamed to rel once whole. The file's size
// and time must stay the same from the first chunk to the last.
func fetchFile(ctx context.Context, cl *client.Client, root *os.Root, info *events.SessionInfo, rel string) (*downloaded, error) {
	local := filepath.FromSlash(rel)
	get := func(off int64) (*events.DownloadResponse, error) {
		return cl.Download(ctx, events.DownloadRequest{SessionID: info.ID, AccessKey: info.AccessKey, Path: rel, Offset: off})
	}
	// The first chunk before anything is made under root: a refused
	// path leaves nothing behind.
	next, err := get(0)
	if err != nil {
		return nil, err
	}
	if dir := filepath.Dir(local); dir != "." {
		if err := root.MkdirAll(dir, 0o755); err != nil {
			return nil, err
		}
	}
	var nonce [6]byte
	_, _ = rand.Read(nonce[:])
	tmp := filepath.Join(filepath.Dir(local), "."+filepath.Base(local)+".bai-download-"+hex.EncodeToString(nonce[:]))
	f, err := root.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, err
	}
	done := false
	defer func() {
		if !done {
			f.Close()
			_ = root.Remove(tmp)
		}
	}()
	var first *events.DownloadResponse
	var off int64
	for {
		resp := next
		if resp == nil {
			if resp, err = get(off); err != nil {
				return nil, err
			}
		}
		next = nil
		n := int64(len(resp.Data))
		switch {
		case resp.Path != rel || resp.Offset != off || n > events.MaxDownloadChunk || resp.Size > events.MaxDownloadFile || off+n > resp.Size:
			return nil, fmt.Errorf("%w: a chunk that is not the one asked for", client.ErrBadReply)
		case first == nil:
			first = resp
		case resp.Size != first.Size || !resp.MTime.Equal(first.MTime):
			return nil, fmt.Errorf("%s changed while it was downloaded; try again", rel)
		}
		if _, err := f.Write(resp.Data); err != nil {
			return nil, err
		}
		off += n
		if resp.EOF || off == resp.Size {
			break
		}
		if n == 0 {
			return nil, fmt.Errorf("%w: an empty chunk before the end", client.ErrBadReply)
		}
	}
	mode := fs.FileMode(0o644)
	if m, err := strconv.ParseUint(first.Mode, 8, 32); err == nil && m&0o111 != 0 {
		mode = 0o755 // executable there, executable here
	}
	if err := f.Chmod(mode); err != nil {
		return nil, err
	}
	if err := f.Close(); err != nil {
		return nil, err
	}
	done = true
	_ = root.Chtimes(tmp, first.MTime, first.MTime)
	if err := root.Rename(tmp, local); err != nil {
		_ = root.Remove(tmp)
		return nil, err
	}
	return &downloaded{Path: rel, Size: off, Mode: first.Mode, MTime: first.MTime}, nil
}

func (r *runner) ls(c *cli.Context) error {
	args, err := argsBetween(c, 1, 2, "ID|NAME [PATH]")
	if err != nil {
		return err
	}
	ref := args[0]
	if !validRef(ref) {
		return invalidf("invalid session id or name %q", ref)
	}
	rel := ""
	if len(args) == 2 && path.Clean(args[1]) != "." {
		if rel, err = remotePath(args[1]); err != nil {
			return err
		}
	}
	out, err := outputFormat(c)
	if err != nil {
		return err
	}
	cl, info, err := r.openSession(c, ref)
	if err != nil {
		return err
	}
	defer cl.Close()
	resp, err := cl.Files(c.Context, events.FilesRequest{SessionID: info.ID, AccessKey: info.AccessKey, Path: rel})
	if err != nil {
		return err
	}
	for _, f := range resp.Files {
		if err := events.CheckFileInfo(f); err != nil {
			return fmt.Errorf("%w: %v", client.ErrBadReply, err)
		}
	}
	if out == "json" {
		return r.printJSON(resp)
	}
	rows := [][]string{{"NAME", "TYPE", "SIZE", "MODE", "MODIFIED"}}
	for _, f := range resp.Files {
		name := printable(f.Name)
		if f.Type == events.FileSymlink {
			name += " -> " + printable(f.Target)
		}
		rows = append(rows, []string{name, f.Type, strconv.FormatInt(f.Size, 10), printable(f.Mode),
			f.MTime.Local().Format("2006-01-02 15:04:05")})
	}
	r.printRows(rows)
	if resp.Truncated {
		r.errorf("only the first %d entries are listed", len(resp.Files))
	}
	return nil
}

// printRows prints cells as columns two spaces apart, the last one as is.
func (r *runner) printRows(rows [][]string) {
	if len(rows) == 0 {
		return
	}
	width := make([]int, len(rows[0]))
	for _, row := range rows {
		for j, c := range row {
			width[j] = max(width[j], len([]rune(c)))
		}
	}
	var b strings.Builder
	for _, row := range rows {
		b.Reset()
		for j, c := range row {
			if j == len(row)-1 {
				b.WriteString(c)
				break
			}
			b.WriteString(c)
			b.WriteString(strings.Repeat(" ", width[j]-len([]rune(c))+2))
		}
		fmt.Fprintln(r.stdout, strings.TrimRight(b.String(), " "))
	}
}

// printable is a name a session made, safe for a terminal: quoted (Go
// syntax) when it holds a control character, a space at either end or a
// quote, or a format character (a right-to-left override), so that no
// escape sequence of the session's reaches the screen.
func printable(s string) string {
	if strings.IndexFunc(s, func(r rune) bool {
		return unicode.IsControl(r) || unicode.Is(unicode.Cf, r) || r == '"' || r == unicode.ReplacementChar
	}) >= 0 ||
		strings.TrimSpace(s) != s {
		return strconv.Quote(s)
	}
	return s
}
