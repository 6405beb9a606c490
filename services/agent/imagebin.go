package agent

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"

	"github.com/bai-sh/bai/services/agent/internal/sandboxinit"
)

// An image named python must answer `python` (and `pip`) in a shell
// command (bai run --exec 'python myscript.py'), as a container image of
// that name does, though the host may have only python3. The process
// runtime puts a bin directory of the image's command names first on each
// execution's PATH, each a symbolic link to the host's binary:
//
//   - sandboxed kernels: the helper makes the links in a fresh directory
//     of the kernel's own root-owned /home tmpfs (sandboxinit.BinDir); the
//     agent's data directory is hidden from them.
//   - plain processes: a directory under the agent's data directory, one
//     per set of links (named by their hash), made once and read-only.

// KernelBinDir is the bin directory a sandboxed kernel sees.
const KernelBinDir = sandboxinit.BinDir

// imageLinksCache maps an interpreter binary to its links.
var imageLinksCache sync.Map

// imageLinks are the command names that a kernel whose image runs code
// with interpreter answers, each to its binary on the host: the
// interpreter's base name; python and python3 for a python interpreter;
// pip and pip3 where pip3 (else pip) is beside it. nil for none.
func imageLinks(interpreter string) map[string]string {
	if interpreter == "" {
		return nil
	}
	if v, ok := imageLinksCache.Load(interpreter); ok {
		return v.(map[string]string)
	}
	links := map[string]string{filepath.Base(interpreter): interpreter}
	if strings.HasPrefix(filepath.Base(interpreter), "python") {
		links["python"], links["python3"] = interpreter, interpreter
		dir := filepath.Dir(interpreter)
		for _, pip := range []string{"pip3", "pip"} {
			p := filepath.Join(dir, pip)
			if executable(p) == nil {
				links["pip"], links["pip3"] = p, p
				break
			}
		}
	}
	imageLinksCache.Store(interpreter, links)
	return links
}

// kernelLinks are the links of image for the sandbox helper; nil when the
// image has no interpreter.
func (r *ProcessRuntime) kernelLinks(image string) map[string]string {
	bin, err := r.Interpreter(image)
	if err != nil {
		return nil
	}
	return imageLinks(bin)
}

// execPath is the PATH of an execution in a kernel of image: the image's
// bin directory first, when it has one.
func (r *ProcessRuntime) execPath(image string) string {
	links := r.kernelLinks(image)
	if len(links) == 0 {
		return execEnvPath
	}
	if r.sandboxed() {
		return KernelBinDir + ":" + execEnvPath
	}
	dir, err := hostBinDir(filepath.Join(filepath.Dir(r.root), "bin"), links)
	if err != nil {
		// Without it the image answers its interpreter's own name
		// (python3) still; an execution is not refused for this.
		return execEnvPath
	}
	return dir + ":" + execEnvPath
}

// hostBinDirs remembers the bin directories made (or found) already.
var hostBinDirs sync.Map

// hostBinDir returns parent/<hash of links>, a read-only directory holding
// links, making it first where it does not exist: in a temporary
// directory beside it, renamed into place once complete, so that a
// concurrent execution never sees it half made.
func hostBinDir(parent string, links map[string]string) (string, error) {
	names := make([]string, 0, len(links))
	for name := range links {
		if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\x00") {
			return "", fmt.Errorf("bad command name %q", name)
		}
		names = append(names, name)
	}
	sort.Strings(names)
	h := sha256.New()
	for _, name := range names {
		fmt.Fprintf(h, "%s\x00%s\x00", name, links[name])
	}
	dir := filepath.Join(parent, hex.EncodeToString(h.Sum(nil))[:16])
	if _, ok := hostBinDirs.Load(dir); ok {
		return dir, nil
	}
	if fi, err := os.Lstat(dir); err == nil && fi.IsDir() {
		hostBinDirs.Store(dir, true)
		return dir, nil
	}
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return "", fmt.Errorf("image bin dir: %w", err)
	}
	tmp, err := os.MkdirTemp(parent, ".tmp-")
	if err != nil {
		return "", fmt.Errorf("image bin dir: %w", err)
	}
	defer func() { // once renamed, nothing is there
		_ = os.Chmod(tmp, 0o755)
		_ = os.RemoveAll(tmp)
	}()
	for _, name := range names {
		if err := os.Symlink(links[name], filepath.Join(tmp, name)); err != nil {
			return "", fmt.Errorf("image bin dir: %w", err)
		}
	}
	if err := os.Chmod(tmp, 0o555); err != nil {
		return "", fmt.Errorf("image bin dir: %w", err)
	}
	if err := os.Rename(tmp, dir); err != nil {
		// Another execution made it first.
		if fi, serr := os.Lstat(dir); serr != nil || !fi.IsDir() {
			return "", fmt.Errorf("image bin dir: %w", errors.Join(err, serr))
		}
	}
	hostBinDirs.Store(dir, true)
	return dir, nil
}
