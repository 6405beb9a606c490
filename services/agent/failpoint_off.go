//go:build !failpoint

package agent

// crashAt does nothing: failpoints exist only in a build with -tags
// failpoint (failpoint.go), which the crash tests make.
func crashAt(string) {}
