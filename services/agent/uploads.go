package agent

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/bai-sh/bai/pkg/events"
)

// workDirer is a runtime whose kernels have a work directory on this host.
type workDirer interface {
	WorkDir(kernelID string) (string, error)
}

// fetchUploads puts the files uploaded for run (events.RunSpec.Files) into
// the kernel's work directory, at their relative paths, and deletes them
// from the upload store. A path that leaves the work directory, through
// ".." or a symlink the kernel made, is refused.
func (s *Service) fetchUploads(ctx context.Context, k *kernel, run events.RunSpec) error {
	if len(run.Files) == 0 {
		return nil
	}
	wd, ok := s.rt.(workDirer)
	if !ok {
		return fmt.Errorf("runtime %s takes no uploaded files", s.rt.Name())
	}
	root, err := wd.WorkDir(k.spec.MainKernelID)
	if err != nil {
		return err
	}
	if root, err = filepath.EvalSymlinks(root); err != nil {
		return fmt.Errorf("work directory: %w", err)
	}
	obs, err := s.js.ObjectStore(ctx, events.UploadBucket)
	if err != nil {
		return fmt.Errorf("upload store: %w", err)
	}
	for _, p := range run.Files {
		if err := events.CheckUploadPath(p); err != nil {
			return err
		}
		dst := filepath.Join(root, filepath.FromSlash(p))
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return fmt.Errorf("upload %s: %w", p, err)
		}
		dir, err := filepath.EvalSymlinks(filepath.Dir(dst))
		if err != nil || (dir != root && !strings.HasPrefix(dir, root+string(filepath.Separator))) {
			return fmt.Errorf("upload %s: leaves the work directory", p)
		}
		if fi, err := os.Lstat(dst); err == nil && fi.Mode()&os.ModeSymlink != 0 {
			if err := os.Remove(dst); err != nil {
				return fmt.Errorf("upload %s: %w", p, err)
			}
		}
		name := events.UploadObject(k.spec.AccessKey, k.spec.ID, run.ID, p)
		data, err := obs.GetBytes(ctx, name)
		if err != nil {
			return fmt.Errorf("upload %s: %w", p, err)
		}
		if err := os.WriteFile(dst, data, 0o644); err != nil {
			return fmt.Errorf("upload %s: %w", p, err)
		}
		if err := obs.Delete(ctx, name); err != nil {
			k.log.Warn().Err(err).Str("object", name).Msg("delete uploaded file")
		}
	}
	return nil
}
