// Package cli is the bai command line: the urfave/cli application behind
// the bai binary (run, start, ps, admin session list, events, rm).
//
// It runs fully in-process: Run takes its arguments, its output writers and
// its environment (an Env) explicitly and returns the exit code, so tests
// of other modules can drive it against a real server and read what it
// printed. Main is what the binary calls: it reads the process environment
// and stops on SIGINT/SIGTERM.
//
// Exit codes follow Backend.AI's client: 0 ok, 1 failure, 2 usage error,
// 3 timeout, 4 invalid argument; `run` exits with the code's own exit code
// once the code ran, and an interrupted command exits 130. Every error is
// one line "bai: <message>" on stderr.
package cli

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/bai-sh/bai/pkg/events"
	"github.com/bai-sh/bai/tools/bai/client"
)

// Exit codes.
const (
	ExitOK          = 0
	ExitFailure     = 1
	ExitUsage       = 2
	ExitTimeout     = 3
	ExitInvalid     = 4
	ExitInterrupted = 130
)

// EnvConfig names the credentials file to read instead of the data
// dir's.
const EnvConfig = "BAI_CONFIG"

// Version is the CLI's version.
const Version = "0.1.0"

// Env is the environment a run of the CLI sees. Empty fields are unset.
type Env struct {
	NATSURL   string // BAI_NATS_URL
	AccessKey string // BAI_ACCESS_KEY
	SecretKey string // BAI_SECRET_KEY
	// DataDir is bai's data directory, where the credentials file
	// (credentials.env) is read; "" reads no file.
	DataDir string
	// Config is the credentials file to read instead of DataDir's
	// (BAI_CONFIG); the environment's variables still beat it.
	Config string
	// Stdin is the standard input; nil: none.
	Stdin io.Reader
	// Pager shows ps --all on a terminal, run by /bin/sh -c: $BAI_PAGER,
	// else $PAGER, else DefaultPager (OSEnv); "" or "cat" is none.
	Pager string
	// Width is the terminal's width for tables (tests); 0: stdout's own
	// when it is a terminal.
	Width int
	// Terminal makes stdout and stderr count as a terminal (for tests);
	// otherwise they do when they are one.
	Terminal bool
	// Timing prints where the command's time went, one line on stderr
	// at its end ($BAI_TIMING: see EnvTiming); "" prints nothing.
	Timing string
}

// OSEnv reads Env from the process environment; DataDir is
// $XDG_DATA_HOME/bai, else ~/.local/share/bai.
func OSEnv() Env {
	return Env{
		NATSURL:   os.Getenv(client.EnvNATSURL),
		AccessKey: os.Getenv(client.EnvAccessKey),
		SecretKey: os.Getenv(client.EnvSecretKey),
		DataDir:   client.DataDir(os.Getenv),
		Config:    os.Getenv(EnvConfig),
		Stdin:     os.Stdin,
		Pager:     osPager(),
		Timing:    os.Getenv(EnvTiming),
	}
}

// osPager is $BAI_PAGER, else $PAGER, else DefaultPager; a variable set
// empty means no pager.
func osPager() string {
	for _, v := range []string{"BAI_PAGER", "PAGER"} {
		if p, ok := os.LookupEnv(v); ok {
			return p
		}
	}
	return DefaultPager
}

// Main runs the CLI as the bai binary does: args as os.Args (program name
// first), the process environment, and a context that SIGINT or SIGTERM
// cancels. It returns the exit code.
func Main(args []string, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return Run(ctx, args, stdout, stderr, OSEnv())
}

// Run runs the CLI in-process: args as os.Args (program name first, e.g.
// []string{"bai", "ps"}), output to stdout and stderr, settings from env
// only (never from the process environment). Cancelling ctx interrupts the
// command as Ctrl-C does. It returns the exit code.
func Run(ctx context.Context, args []string, stdout, stderr io.Writer, env Env) int {
	r := &runner{env: env, stdout: stdout, stderr: stderr}
	var err error
	if r.timing, err = newTiming(env.Timing, time.Now()); err == nil {
		r.timing.mark("main")
		err = r.app().RunContext(ctx, args)
		r.timing.mark("end")
		r.timing.print(stderr)
	}
	if err == nil {
		return ExitOK
	}
	code := exitCode(ctx, err)
	if code == ExitInterrupted {
		return code
	}
	if msg := err.Error(); msg != "" {
		r.errorf("%s", msg)
	}
	return code
}

// urfave/cli shares one help flag and one version flag among all apps, and
// applying a flag writes to it: two Runs at once (a test following events
// while another removes the session) would race. Give each Apply a copy.
func init() {
	cli.HelpPrinter = printHelp
	if f, ok := cli.HelpFlag.(*cli.BoolFlag); ok {
		cli.HelpFlag = &copyOnApply{*f}
	}
	if f, ok := cli.VersionFlag.(*cli.BoolFlag); ok {
		cli.VersionFlag = &copyOnApply{*f}
	}
}

// copyOnApply is a BoolFlag whose Apply leaves the shared flag untouched.
type copyOnApply struct{ cli.BoolFlag }

func (f *copyOnApply) Apply(set *flag.FlagSet) error {
	c := f.BoolFlag
	return c.Apply(set)
}

// exitError carries an exit code; an empty message prints nothing.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string {
	if e.err == nil {
		return ""
	}
	return e.err.Error()
}

func (e *exitError) Unwrap() error { return e.err }

func usageErrorf(format string, args ...any) error {
	return &exitError{code: ExitUsage, err: fmt.Errorf(format, args...)}
}

func invalidf(format string, args ...any) error {
	return &exitError{code: ExitInvalid, err: fmt.Errorf(format, args...)}
}

// exitWith ends a command with code and no message.
func exitWith(code int) error {
	if code == ExitOK {
		return nil
	}
	return &exitError{code: code}
}

func exitCode(ctx context.Context, err error) int {
	var ee *exitError
	switch {
	case errors.As(err, &ee):
		return ee.code
	case ctx.Err() != nil && errors.Is(err, context.Canceled):
		return ExitInterrupted
	case errors.Is(err, client.ErrTimeout), errors.Is(err, context.DeadlineExceeded):
		return ExitTimeout
	case errors.Is(err, events.ErrInvalid):
		return ExitInvalid
	}
	return ExitFailure
}

// runner holds one run's environment and writers; the commands are its
// methods.
type runner struct {
	env    Env
	stdout io.Writer
	stderr io.Writer
	timing *timing // nil: not asked for (Env.Timing)
}

// terminal reports whether w shows on a terminal.
func (r *runner) terminal(w io.Writer) bool { return r.env.Terminal || isTerminal(w) }

// errorf prints one error line.
func (r *runner) errorf(format string, args ...any) {
	msg := strings.Join(strings.Fields(strings.ReplaceAll(fmt.Sprintf(format, args...), "\n", "; ")), " ")
	fmt.Fprintf(r.stderr, "bai: %s\n", msg)
}

func (r *runner) printJSON(v any) error {
	enc := json.NewEncoder(r.stdout)
	enc.SetEscapeHTML(false)
	return enc.Encode(v)
}

func onUsageError(c *cli.Context, err error, _ bool) error {
	name := "bai"
	if c.Command != nil && c.Command.HelpName != "" {
		name = c.Command.HelpName
	}
	return usageErrorf("%v (see '%s --help')", err, name)
}

// globalFlags are accepted before the command and after it.
func globalFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{
			Name:  "nats",
			Usage: "NATS server `URL` (default: $BAI_NATS_URL, else the credentials file, else " + client.DefaultURL + ")",
		},
		&cli.StringFlag{
			Name:  "credentials",
			Usage: "read the URL and keys from credentials `FILE` (as bai-server writes it), before the environment's (default: $" + EnvConfig + ", after the environment's, else the data dir's credentials.env)",
		},
		&cli.StringFlag{
			Name:  "output",
			Usage: "output `FORMAT`: text or json",
			Value: "text",
		},
	}
}

// global returns a global flag's value: the innermost context that set
// it, else the default.
func global(c *cli.Context, name string) string {
	for _, x := range c.Lineage() {
		if x.IsSet(name) {
			return x.String(name)
		}
	}
	return c.String(name)
}

// outputFormat validates --output: "text" or "json".
func outputFormat(c *cli.Context) (string, error) {
	switch o := global(c, "output"); o {
	case "text", "json":
		return o, nil
	default:
		return "", invalidf("--output must be text or json, not %q", o)
	}
}

// cmdName is the command's name as typed after "bai".
func cmdName(c *cli.Context) string {
	if c.Command == nil || c.Command.HelpName == "" {
		return "bai"
	}
	return strings.TrimPrefix(c.Command.HelpName, "bai ")
}

// argsBetween checks the count of positional arguments: between min and
// max (-1: no limit), each named what.
func argsBetween(c *cli.Context, min, max int, what string) ([]string, error) {
	args := c.Args().Slice()
	help := c.Command.HelpName + " --help"
	for _, a := range args {
		if len(a) > 1 && strings.HasPrefix(a, "-") {
			return nil, usageErrorf("flag %s must come before the arguments (see '%s')", a, help)
		}
	}
	if len(args) >= min && (max < 0 || len(args) <= max) {
		return args, nil
	}
	switch {
	case max == 0:
		return nil, usageErrorf("%s takes no arguments (see '%s')", cmdName(c), help)
	case max < 0:
		return nil, usageErrorf("%s takes %s [%s...] (see '%s')", cmdName(c), what, what, help)
	case min > 1:
		return nil, usageErrorf("%s takes %s (see '%s')", cmdName(c), what, help)
	}
	return nil, usageErrorf("%s takes one argument, %s (see '%s')", cmdName(c), what, help)
}

// resolveOptions resolves the connection settings: the URL from --nats
// (flagURL), else the --credentials file (flagFile), else $BAI_NATS_URL,
// else the credentials file ($BAI_CONFIG, else the data dir's), else
// client.DefaultURL; the keys from --credentials, else the environment,
// else the credentials file. A file named by --credentials or
// $BAI_CONFIG must exist; the data dir's is read only when something is
// missing.
func resolveOptions(flagURL, flagFile string, env Env) (client.Options, error) {
	opts := client.Options{URL: flagURL}
	if flagFile != "" {
		file, err := client.ReadCredentials(flagFile)
		if err != nil {
			return opts, fmt.Errorf("read credentials: %w", err)
		}
		if file.AccessKey == "" || file.SecretKey == "" {
			return opts, fmt.Errorf("credentials file %s sets no %s and %s", flagFile, client.EnvAccessKey, client.EnvSecretKey)
		}
		if opts.URL == "" {
			opts.URL = file.NATSURL
		}
		if opts.URL == "" {
			opts.URL = env.NATSURL
		}
		if opts.URL == "" {
			opts.URL = client.DefaultURL
		}
		opts.AccessKey, opts.SecretKey = file.AccessKey, file.SecretKey
		return opts, nil
	}
	if opts.URL == "" {
		opts.URL = env.NATSURL
	}
	ak, sk := env.AccessKey, env.SecretKey
	switch {
	case ak != "" && sk == "":
		return opts, fmt.Errorf("%s is set but %s is not", client.EnvAccessKey, client.EnvSecretKey)
	case ak == "" && sk != "":
		return opts, fmt.Errorf("%s is set but %s is not", client.EnvSecretKey, client.EnvAccessKey)
	}
	path := env.Config
	if path == "" && env.DataDir != "" {
		path = client.CredentialsPath(env.DataDir)
	}
	if (ak == "" || opts.URL == "") && path != "" {
		file, err := client.ReadCredentials(path)
		if err != nil && (env.Config != "" || !errors.Is(err, fs.ErrNotExist)) {
			if env.Config != "" {
				return opts, fmt.Errorf("read credentials ($%s): %w", EnvConfig, err)
			}
			return opts, fmt.Errorf("read credentials: %w", err)
		}
		if opts.URL == "" {
			opts.URL = file.NATSURL
		}
		if ak == "" {
			ak, sk = file.AccessKey, file.SecretKey
		}
	}
	if opts.URL == "" {
		opts.URL = client.DefaultURL
	}
	if ak == "" || sk == "" {
		where := "set XDG_DATA_HOME or HOME to find the credentials file bai-server writes"
		switch {
		case env.Config != "":
			where = "fix $" + EnvConfig + " (" + env.Config + "), which sets none"
		case path != "":
			where = "start bai-server, which writes them to " + path
		}
		return opts, fmt.Errorf("no credentials: set %s and %s, or %s", client.EnvAccessKey, client.EnvSecretKey, where)
	}
	opts.AccessKey, opts.SecretKey = ak, sk
	return opts, nil
}

func (r *runner) connect(c *cli.Context) (*client.Client, error) {
	opts, err := resolveOptions(global(c, "nats"), global(c, "credentials"), r.env)
	if err != nil {
		return nil, err
	}
	cl, err := client.Connect(c.Context, opts)
	if err == nil {
		r.timing.mark("connected")
	}
	return cl, err
}

func (r *runner) app() *cli.App {
	app := &cli.App{
		Name:                      "bai",
		Usage:                     "compute sessions, the Backend.AI way, on NATS",
		Version:                   Version,
		Writer:                    r.stdout,
		ErrWriter:                 r.stderr,
		Flags:                     globalFlags(),
		DisableSliceFlagSeparator: true,
		HideHelpCommand:           true,
		OnUsageError:              onUsageError,
		ExitErrHandler:            func(*cli.Context, error) {}, // never os.Exit
		Action:                    helpOrUnknown,
		Commands: []*cli.Command{
			r.runCommand(),
			r.startCommand(),
			r.psCommand("ps", "list your sessions (alias of admin session list)"),
			{
				Name:            "admin",
				HideHelpCommand: true,
				Usage:           "administration commands",
				Action:          helpOrUnknown,
				Subcommands: []*cli.Command{{
					Name:            "session",
					HideHelpCommand: true,
					Usage:           "session administration",
					Action:          helpOrUnknown,
					Subcommands: []*cli.Command{
						r.psCommand("list", "list sessions"),
					},
				}, r.imageCommand(), r.keypairCommand(), r.policyCommand(), r.agentCommand(), r.healthCommand()},
			},
			r.eventsCommand(),
			r.rmCommand(),
			r.infoCommand(),
			r.logsCommand(),
			r.downloadCommand(),
			r.lsCommand(),
			r.completionCommand(),
			r.completeCommand(),
		},
	}
	setUsageError(app.Commands)
	return app
}

// setUsageError gives every command our usage-error handler, and hides
// urfave's help command: it is one shared *Command that each command's
// setup writes to, which races when two Runs go at once.
func setUsageError(cmds []*cli.Command) {
	for _, c := range cmds {
		c.OnUsageError = onUsageError
		c.HideHelpCommand = true
		setUsageError(c.Subcommands)
	}
}

// helpOrUnknown is the action of a command group: help without arguments,
// a usage error for an unknown command.
func helpOrUnknown(c *cli.Context) error {
	name := "bai"
	if c.Command != nil && c.Command.HelpName != "" {
		name = c.Command.HelpName
	}
	if c.Args().Present() {
		return usageErrorf("unknown command %q (see '%s --help')", c.Args().First(), name)
	}
	if name == "bai" {
		return cli.ShowAppHelp(c)
	}
	return cli.ShowSubcommandHelp(c)
}
