// Command bai-sandbox-init is the process runtime's sandbox helper: the
// agent starts it, next to its own binary, as the first process of each
// kernel execution's namespaces. It is not meant to be run by hand.
package main

import (
	"fmt"
	"os"

	"github.com/bai-sh/bai/services/agent/internal/sandboxinit"
)

func main() {
	sandboxinit.Main() // returns only without its environment variable
	fmt.Fprintln(os.Stderr, "bai-sandbox-init: the bai agent's sandbox helper; not meant to be run by hand")
	os.Exit(2)
}
