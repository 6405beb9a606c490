// Command bai is the user's command line for bai compute sessions: run,
// start, ps (admin session list), events and rm, after Backend.AI's client.
// See package cli.
package main

import (
	"os"

	"github.com/bai-sh/bai/tools/bai/cli"
	// The heap on a huge page from the start: page faults are most of a
	// short command's start on some virtual machines.
	_ "github.com/bai-sh/bai/tools/bai/internal/hugeheap"
)

func main() {
	os.Exit(cli.Main(os.Args, os.Stdout, os.Stderr))
}
