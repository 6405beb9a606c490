package agent

import (
	"context"
	"fmt"

	"github.com/bai-sh/bai/pkg/events"
)

// fileWriter is a runtime whose kernels have a work directory on this
// host that the agent writes files into (ProcessRuntime.WriteFile).
type fileWriter interface {
	WriteFile(kernelID, rel string, data []byte) error
}

// fetchUploads puts the files uploaded for run (events.RunSpec.Files) into
// the kernel's work directory, at their relative paths, and deletes them
// from the upload store. The names were checked at admission and are
// checked again here; a path through a symlink the kernel made, whatever
// it points to, is refused and changes nothing outside the work directory.
func (s *Service) fetchUploads(ctx context.Context, k *kernel, run events.RunSpec) error {
	if len(run.Files) == 0 {
		return nil
	}
	fw, ok := s.rt.(fileWriter)
	if !ok {
		return fmt.Errorf("runtime %s takes no uploaded files", s.rt.Name())
	}
	if err := events.CheckRunID(run.ID); err != nil {
		return err
	}
	for _, p := range run.Files {
		if err := events.CheckUploadPath(p); err != nil {
			return err
		}
	}
	obs, err := s.js.ObjectStore(ctx, events.UploadBucket)
	if err != nil {
		return fmt.Errorf("upload store: %w", err)
	}
	for _, p := range run.Files {
		name := events.UploadObject(k.spec.AccessKey, k.spec.ID, run.ID, p)
		data, err := obs.GetBytes(ctx, name)
		if err != nil {
			return fmt.Errorf("upload %s: %w", p, err)
		}
		if err := fw.WriteFile(k.spec.MainKernelID, p, data); err != nil {
			return fmt.Errorf("upload %s: %w", p, err)
		}
		if err := obs.Delete(ctx, name); err != nil {
			k.log.Warn().Err(err).Str("object", name).Msg("delete_uploaded_file")
		}
	}
	return nil
}
