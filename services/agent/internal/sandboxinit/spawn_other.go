//go:build !amd64

package sandboxinit

import "syscall"

const vforkSupported = false

func spawn(*plan, *launch) (int, int, func(), error) { return 0, -1, nil, syscall.ENOSYS }
