package cli

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/bai-sh/bai/pkg/events"
	"github.com/bai-sh/bai/tools/bai/client"
)

// localFile is a file run uploads: its local path and its path in the
// session's work directory.
type localFile struct {
	local, remote string
	data          []byte
}

// readFiles reads run's FILE arguments. Each must be a regular file under
// the current directory, named by a relative path without "..", and not
// a symlink that leads out of it; its relative path is kept.
func readFiles(args []string) ([]localFile, error) {
	if len(args) > events.MaxUploadFiles {
		return nil, invalidf("too many files (at most %d)", events.MaxUploadFiles)
	}
	cwd, err := os.Getwd()
	if err != nil {
		return nil, err
	}
	if cwd, err = filepath.EvalSymlinks(cwd); err != nil {
		return nil, err
	}
	var files []localFile
	seen := map[string]bool{}
	for _, a := range args {
		if filepath.IsAbs(a) {
			return nil, invalidf("file %s: an absolute path; give a path relative to the current directory", a)
		}
		clean := filepath.Clean(a)
		if clean == ".." || strings.HasPrefix(clean, ".."+string(filepath.Separator)) {
			return nil, invalidf("file %s: leaves the current directory", a)
		}
		real, err := filepath.EvalSymlinks(clean)
		if err != nil {
			return nil, invalidf("file %s: %v", a, err)
		}
		if abs, err := filepath.Abs(real); err != nil || !strings.HasPrefix(abs, cwd+string(filepath.Separator)) {
			return nil, invalidf("file %s: a symlink out of the current directory", a)
		}
		fi, err := os.Stat(real)
		switch {
		case err != nil:
			return nil, invalidf("file %s: %v", a, err)
		case !fi.Mode().IsRegular():
			return nil, invalidf("file %s: not a regular file", a)
		case fi.Size() > events.MaxUploadFile:
			return nil, invalidf("file %s: %d bytes (at most %d)", a, fi.Size(), events.MaxUploadFile)
		}
		remote := filepath.ToSlash(clean)
		if err := events.CheckUploadPath(remote); err != nil {
			return nil, invalidf("file %s: %v", a, err)
		}
		if seen[remote] {
			return nil, invalidf("file %s given twice", a)
		}
		seen[remote] = true
		data, err := os.ReadFile(real)
		if err != nil {
			return nil, invalidf("file %s: %v", a, err)
		}
		files = append(files, localFile{local: a, remote: remote, data: data})
	}
	return files, nil
}

// uploadFiles sends files for run runID of session sid.
func uploadFiles(ctx context.Context, cl *client.Client, sid, runID string, files []localFile) ([]string, error) {
	var paths []string
	for _, f := range files {
		if _, err := cl.Upload(ctx, events.UploadRequest{SessionID: sid, RunID: runID, Path: f.remote, Data: f.data}); err != nil {
			return nil, fmt.Errorf("upload %s: %w", f.local, err)
		}
		paths = append(paths, f.remote)
	}
	return paths, nil
}

// runFileCode runs an uploaded Python file as __main__, for run IMAGE FILE
// without -c or --exec.
func runFileCode(path string) string {
	return fmt.Sprintf("import runpy, sys\nsys.argv = [%q]\nrunpy.run_path(%q, run_name=\"__main__\")\n", path, path)
}
