package cli

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/bai-sh/bai/pkg/events"
	"github.com/bai-sh/bai/tools/bai/client"
)

// Shell completion: `bai completion bash|zsh|fish` prints a script that
// asks `bai __complete WORD... CURRENT` for the candidates of the word
// being typed: commands, flags, a few flag values, session names and ids
// (from a quick list request) and image aliases. A failed request
// completes nothing and prints nothing.

// completeTimeout bounds the server requests of one completion.
const completeTimeout = time.Second

const bashCompletion = `# bash completion for bai. Load it with:
#   source <(bai completion bash)
# or save it as /etc/bash_completion.d/bai.
_bai() {
    local IFS=$'\n'
    COMPREPLY=($(compgen -W "$("${COMP_WORDS[0]}" __complete "${COMP_WORDS[@]:1:COMP_CWORD}" 2>/dev/null)" -- "${COMP_WORDS[COMP_CWORD]}"))
}
# Image names hold colons (python:3.11): keep them one word.
COMP_WORDBREAKS=${COMP_WORDBREAKS//:/}
complete -o default -F _bai bai
`

const zshCompletion = `#compdef bai
# zsh completion for bai. Load it with (after compinit):
#   source <(bai completion zsh)
# or save it as _bai in a directory of $fpath.
_bai() {
    local -a cands
    cands=("${(@f)$(${words[1]} __complete "${(@)words[2,CURRENT]}" 2>/dev/null)}")
    if (( ${#cands} )) && [[ -n ${cands[1]} ]]; then
        compadd -- "${cands[@]}"
    else
        _files
    fi
}
if [[ "${funcstack[1]}" == "_bai" ]]; then
    _bai "$@"
else
    compdef _bai bai
fi
`

const fishCompletion = `# fish completion for bai. Load it with:
#   bai completion fish | source
# or save it as ~/.config/fish/completions/bai.fish.
function __bai_complete
    set -l tokens (commandline -opc)
    set -l cur (commandline -ct)
    $tokens[1] __complete $tokens[2..-1] "$cur" 2>/dev/null
end
complete -c bai -a '(__bai_complete)'
`

func (r *runner) completionCommand() *cli.Command {
	return &cli.Command{
		Name:      "completion",
		Usage:     "print the shell completion script for bash, zsh or fish",
		ArgsUsage: "bash|zsh|fish",
		Description: "Prints a script that completes bai's commands, flags, session names and ids\n" +
			"and image aliases. Load it with:\n\n" +
			"  bash: source <(bai completion bash)\n" +
			"  zsh:  source <(bai completion zsh)      (after compinit)\n" +
			"  fish: bai completion fish | source",
		Action: func(c *cli.Context) error {
			args, err := argsBetween(c, 1, 1, "bash|zsh|fish")
			if err != nil {
				return err
			}
			script, ok := map[string]string{"bash": bashCompletion, "zsh": zshCompletion, "fish": fishCompletion}[args[0]]
			if !ok {
				return invalidf("no completion for shell %q: give bash, zsh or fish", args[0])
			}
			_, err = fmt.Fprint(r.stdout, script)
			return err
		},
	}
}

// completeCommand is the hidden command the scripts call: its arguments
// are the words typed after bai, the last one the word being completed.
func (r *runner) completeCommand() *cli.Command {
	return &cli.Command{
		Name:            "__complete",
		Hidden:          true,
		SkipFlagParsing: true,
		Action: func(c *cli.Context) error {
			for _, s := range r.complete(c.Context, c.App.Commands, c.Args().Slice()) {
				fmt.Fprintln(r.stdout, s)
			}
			return nil
		},
	}
}

// flagValues are the values some flags take, for completion.
var flagValues = map[string][]string{
	"output": {"text", "json"},
	"type":   {"interactive", "batch"},
	"status": statusList(),
	"s":      statusList(),
}

func statusList() []string {
	out := make([]string, len(events.AllStatuses))
	for i, s := range events.AllStatuses {
		out[i] = string(s)
	}
	return out
}

// sessionCommands take a session's ID|NAME as their arguments.
var sessionCommands = map[string]bool{"events": true, "rm": true, "info": true, "logs": true}

// complete returns the candidates for the last of words, the ones before
// it typed already.
func (r *runner) complete(ctx context.Context, cmds []*cli.Command, words []string) []string {
	if len(words) == 0 {
		words = []string{""}
	}
	cur, before := words[len(words)-1], words[:len(words)-1]
	var cmd *cli.Command
	flags := globalFlags()
	positional := 0
	for i := 0; i < len(before); i++ {
		w := before[i]
		if strings.HasPrefix(w, "-") && len(w) > 1 {
			if f := findFlag(flags, w); f != nil && takesValue(f) && !strings.Contains(w, "=") {
				i++ // its value
			}
			continue
		}
		if sub := findCommand(cmds, w); sub != nil && positional == 0 {
			cmd, cmds, flags = sub, sub.Subcommands, sub.Flags
			continue
		}
		positional++
	}
	// The value of a flag.
	if n := len(before); n > 0 && strings.HasPrefix(before[n-1], "-") && !strings.Contains(before[n-1], "=") {
		if f := findFlag(flags, before[n-1]); f != nil && takesValue(f) {
			return filterPrefix(flagValues[strings.TrimLeft(before[n-1], "-")], cur)
		}
	}
	if strings.HasPrefix(cur, "-") {
		var out []string
		for _, f := range flags {
			if vf, ok := f.(cli.VisibleFlag); ok && !vf.IsVisible() {
				continue
			}
			for _, name := range f.Names() {
				if len(name) == 1 {
					out = append(out, "-"+name)
				} else {
					out = append(out, "--"+name)
				}
			}
		}
		if cmd != nil {
			out = append(out, "--help")
		}
		return filterPrefix(out, cur)
	}
	if len(cmds) > 0 && positional == 0 {
		var out []string
		for _, c := range cmds {
			if !c.Hidden {
				out = append(out, c.Name)
			}
		}
		return filterPrefix(out, cur)
	}
	if cmd == nil {
		return nil
	}
	switch {
	case sessionCommands[cmd.Name]:
		return filterPrefix(r.completeSessions(ctx, before, sessionStatuses(cmd.Name)), cur)
	case (cmd.Name == "download" || cmd.Name == "ls") && positional == 0:
		return filterPrefix(r.completeSessions(ctx, before, events.DefaultListStatuses), cur)
	case (cmd.Name == "run" || cmd.Name == "start") && positional == 0:
		return filterPrefix(r.completeImages(ctx, before), cur)
	}
	return nil // files, by the shell
}

// sessionStatuses are the sessions a command's completion offers: rm the
// live ones, the others any.
func sessionStatuses(cmd string) []events.Status {
	if cmd == "rm" {
		return events.DefaultListStatuses
	}
	return events.AllStatuses
}

func findCommand(cmds []*cli.Command, name string) *cli.Command {
	for _, c := range cmds {
		if c.Hidden {
			continue
		}
		if c.Name == name {
			return c
		}
		for _, a := range c.Aliases {
			if a == name {
				return c
			}
		}
	}
	return nil
}

func findFlag(flags []cli.Flag, word string) cli.Flag {
	name, _, _ := strings.Cut(strings.TrimLeft(word, "-"), "=")
	for _, f := range flags {
		for _, n := range f.Names() {
			if n == name {
				return f
			}
		}
	}
	return nil
}

func takesValue(f cli.Flag) bool {
	dg, ok := f.(cli.DocGenerationFlag)
	return ok && dg.TakesValue()
}

func filterPrefix(cands []string, prefix string) []string {
	var out []string
	for _, c := range cands {
		if strings.HasPrefix(c, prefix) {
			out = append(out, c)
		}
	}
	return out
}

// quickClient connects for a completion, with the connection flags typed
// so far; nil when it cannot.
func (r *runner) quickClient(ctx context.Context, before []string) *client.Client {
	var url, creds string
	for i, w := range before {
		for _, f := range []struct {
			name string
			dst  *string
		}{{"nats", &url}, {"credentials", &creds}} {
			switch {
			case strings.HasPrefix(w, "--"+f.name+"="):
				*f.dst = strings.TrimPrefix(w, "--"+f.name+"=")
			case w == "--"+f.name && i+1 < len(before):
				*f.dst = before[i+1]
			}
		}
	}
	opts, err := resolveOptions(url, creds, r.env)
	if err != nil {
		return nil
	}
	opts.ConnectTimeout, opts.Timeout = completeTimeout, completeTimeout
	cl, err := client.Connect(ctx, opts)
	if err != nil {
		return nil
	}
	return cl
}

// completeSessions are the names and ids of the caller's most recently
// changed sessions in statuses.
func (r *runner) completeSessions(ctx context.Context, before []string, statuses []events.Status) []string {
	ctx, cancel := context.WithTimeout(ctx, completeTimeout)
	defer cancel()
	cl := r.quickClient(ctx, before)
	if cl == nil {
		return nil
	}
	defer cl.Close()
	resp, err := cl.List(ctx, events.ListRequest{Statuses: statuses, Limit: 100})
	if err != nil {
		return nil
	}
	var out []string
	seen := map[string]bool{}
	for _, s := range resp.Sessions {
		for _, v := range []string{s.Name, s.ID} {
			if v != "" && !seen[v] {
				seen[v] = true
				out = append(out, v)
			}
		}
	}
	return out
}

// completeImages are the images and aliases the gateway admits.
func (r *runner) completeImages(ctx context.Context, before []string) []string {
	ctx, cancel := context.WithTimeout(ctx, completeTimeout)
	defer cancel()
	cl := r.quickClient(ctx, before)
	if cl == nil {
		return nil
	}
	defer cl.Close()
	resp, err := cl.Images(ctx)
	if err != nil {
		return nil
	}
	var out []string
	for _, img := range resp.Images {
		out = append(out, img.Name)
		out = append(out, img.Aliases...)
	}
	sort.Strings(out)
	return out
}
