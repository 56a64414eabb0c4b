package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
	"time"
)

// Exit codes, stable for scripts.
const (
	exitOK       = 0 // success
	exitFailure  = 1 // the command ran and failed
	exitUsage    = 2 // bad command line
	exitProblems = 3 // check found problems in the root
)

// command is one subcommand. Each lives in a file of its own and registers
// itself from init with register.
type command struct {
	// Name is the word after "liveobjects"; for nested commands, the
	// words joined by spaces ("qsm service").
	Name string
	// Args is the synopsis after the name, e.g. "ROOT MOUNTPOINT".
	Args string
	// Summary is one line for the command list.
	Summary string
	// Help is the longer text shown by --help, after the synopsis.
	Help string
	// Words, if set, are the only values of the positional arguments;
	// shell completion offers them instead of file names.
	Words []string
	// FlagWords, if set, are the values shell completion offers after a
	// flag, by flag name. A flag's Value may offer them itself
	// (valueWords); after other flags that take a value, completion
	// offers file names (environment variable names after a flag named
	// "...-env", nothing after a number).
	FlagWords map[string][]string
	// Flags declares the command's flags on fs; it may be nil.
	Flags func(fs *flag.FlagSet)
	// Run runs the command with the arguments left after the flags.
	Run func(ctx context.Context, args []string) error
}

// usage is the command's synopsis: its name, [flags] and its arguments.
func (c *command) usage() string {
	return strings.TrimSpace("liveobjects " + c.Name + " [flags] " + c.Args)
}

var commands = map[string]*command{}

func register(c *command) {
	if _, dup := commands[c.Name]; dup {
		panic("liveobjects: command registered twice: " + c.Name)
	}
	commands[c.Name] = c
}

// usageError marks an error in the command line; it exits with exitUsage.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, a ...any) error { return usageError{fmt.Sprintf(format, a...)} }

// exitError carries a specific exit code.
type exitError struct {
	code int
	err  error
}

func (e exitError) Error() string { return e.err.Error() }
func (e exitError) Unwrap() error { return e.err }

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// global flags
var (
	logLevel = new(slog.LevelVar)
)

func run(args []string, stdout, stderr io.Writer) int {
	// Global flags come before the command.
	gfs := flag.NewFlagSet("liveobjects", flag.ContinueOnError)
	gfs.SetOutput(stderr)
	verbose := gfs.Bool("v", false, "log debug messages")
	quiet := gfs.Bool("q", false, "log only errors")
	showVersion := gfs.Bool("version", false, "print the version (as the version command does)")
	// Help asked for goes to stdout once; after a bad flag (which the
	// flag package names on stderr) the help follows on stderr.
	gfs.Usage = func() {}
	if err := gfs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			printTopHelp(stdout)
			return exitOK
		}
		printTopHelp(stderr)
		return exitUsage
	}
	switch {
	case *verbose:
		logLevel.Set(slog.LevelDebug)
	case *quiet:
		logLevel.Set(slog.LevelError)
	}
	slog.SetDefault(slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: logLevel})))

	rest := gfs.Args()
	if *showVersion {
		rest = append([]string{"version"}, rest...)
	}
	if len(rest) == 0 {
		printTopHelp(stderr)
		return exitUsage
	}
	if rest[0] == "help" || rest[0] == "--help" || rest[0] == "-h" {
		if len(rest) == 1 {
			printTopHelp(stdout)
			return exitOK
		}
		if c, _ := findCommand(rest[1:]); c != nil {
			printCommandHelp(stdout, c)
			return exitOK
		}
		if g := rest[1]; len(rest) == 2 && len(groupCommands(g)) > 0 {
			printGroupHelp(stdout, g)
			return exitOK
		}
		fmt.Fprintf(stderr, "liveobjects help: unknown command %q; run 'liveobjects help' for the list\n", strings.Join(rest[1:], " "))
		return exitUsage
	}
	c, n := findCommand(rest)
	if c == nil {
		g := rest[0]
		if len(groupCommands(g)) == 0 {
			fmt.Fprintf(stderr, "liveobjects: unknown command %q; run 'liveobjects help' for the list\n", strings.Join(rest, " "))
			return exitUsage
		}
		// A group's word alone, or with a word that names none of its
		// commands: list the group's commands.
		switch {
		case len(rest) == 2 && (rest[1] == "--help" || rest[1] == "-help" || rest[1] == "-h"):
			printGroupHelp(stdout, g)
			return exitOK
		case len(rest) == 1:
			fmt.Fprintf(stderr, "liveobjects %s: want one of its commands\n\n", g)
		default:
			fmt.Fprintf(stderr, "liveobjects: unknown command %q\n\n", strings.Join(rest[:2], " "))
		}
		printGroupHelp(stderr, g)
		return exitUsage
	}
	fs := flag.NewFlagSet("liveobjects "+c.Name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {}
	if c.Flags != nil {
		c.Flags(fs)
	}
	if err := fs.Parse(interspersed(fs, rest[n:])); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			printCommandHelp(stdout, c)
			return exitOK
		}
		printCommandHelp(stderr, c)
		return exitUsage
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	finished := make(chan struct{})
	go afterInterrupt(ctx, stop, stderr, finished)
	err := c.Run(ctx, fs.Args())
	close(finished)
	if err == nil {
		return exitOK
	}
	var ue usageError
	if errors.As(err, &ue) {
		fmt.Fprintf(stderr, "liveobjects %s: %s\nusage: %s\n", c.Name, ue.msg, c.usage())
		return exitUsage
	}
	var ee exitError
	if errors.As(err, &ee) {
		if ee.err != nil && ee.err.Error() != "" {
			fmt.Fprintf(stderr, "liveobjects %s: %v\n", c.Name, ee.err)
		}
		return ee.code
	}
	if errors.Is(err, context.Canceled) && ctx.Err() != nil {
		return exitOK // interrupted by the user after a clean shutdown
	}
	fmt.Fprintf(stderr, "liveobjects %s: %v\n", c.Name, err)
	return exitFailure
}

// stillStopping is how long a command may take to stop after an
// interrupt before it is said to be still stopping.
const stillStopping = 3 * time.Second

// afterInterrupt waits for the first SIGINT or SIGTERM (ctx ends), then
// gives the signals back their default action, so that a second one ends
// the process at once: a command stuck in a read that nothing ends (a
// live file, a pipe) can always be left. If the command is still stopping
// after stillStopping, it says so. finished is closed when the command has
// returned.
func afterInterrupt(ctx context.Context, stop func(), stderr io.Writer, finished <-chan struct{}) {
	select {
	case <-ctx.Done():
	case <-finished:
		return
	}
	stop()
	select {
	case <-finished:
	case <-time.After(stillStopping):
		fmt.Fprintln(stderr, "liveobjects: still stopping; press Ctrl-C again to quit at once")
	}
}

// findCommand finds the longest registered name that prefixes args and
// returns the command and the number of words it took.
func findCommand(args []string) (*command, int) {
	for n := min(len(args), 3); n > 0; n-- {
		if c, ok := commands[strings.Join(args[:n], " ")]; ok {
			return c, n
		}
	}
	return nil, 0
}

// interspersed reorders args so that flags after positional arguments are
// parsed too ("mount ROOT MNT --relay X"). A lone "--" ends flags.
func interspersed(fs *flag.FlagSet, args []string) []string {
	var flags, pos []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			pos = append(pos, args[i+1:]...)
			break
		}
		if len(a) > 1 && a[0] == '-' {
			flags = append(flags, a)
			name := strings.TrimLeft(a, "-")
			if strings.Contains(name, "=") {
				continue
			}
			if f := fs.Lookup(name); f != nil {
				if bf, ok := f.Value.(interface{ IsBoolFlag() bool }); ok && bf.IsBoolFlag() {
					continue
				}
				if i+1 == len(args) {
					// No value: left last, so that the parser says
					// the flag needs one (after a "--" it would take
					// that as its value).
					return flags
				}
				flags = append(flags, args[i+1])
				i++
			}
			continue
		}
		pos = append(pos, a)
	}
	return append(flags, append([]string{"--"}, pos...)...)
}

func sortedNames() []string {
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

func printTopHelp(w io.Writer) {
	fmt.Fprintf(w, `liveobjects: live distributed objects as files.

usage: liveobjects [-v|-q] COMMAND [flags] [args]
       liveobjects --version

commands:
`)
	for _, n := range sortedNames() {
		fmt.Fprintf(w, "  %-18s %s\n", n, commands[n].Summary)
	}
	fmt.Fprintf(w, `
Run 'liveobjects COMMAND --help' for a command's flags.
Exit codes: 0 success, 1 failure, 2 bad usage, 3 check found problems.
`)
}

// groupCommands returns, sorted, the names of the commands whose first
// word is g ("mo" gives "mo add", "mo get", ...), unless g is a command
// itself.
func groupCommands(g string) []string {
	if _, ok := commands[g]; ok {
		return nil
	}
	var names []string
	for _, n := range sortedNames() {
		if strings.HasPrefix(n, g+" ") {
			names = append(names, n)
		}
	}
	return names
}

// printGroupHelp lists the commands of the group g.
func printGroupHelp(w io.Writer, g string) {
	fmt.Fprintf(w, "usage: liveobjects %s COMMAND [flags] [args]\n\ncommands:\n", g)
	for _, n := range groupCommands(g) {
		fmt.Fprintf(w, "  %-18s %s\n", n, commands[n].Summary)
	}
	fmt.Fprintf(w, "\nRun 'liveobjects %s COMMAND --help' for a command's flags.\n", g)
}

func printCommandHelp(w io.Writer, c *command) {
	fmt.Fprintf(w, "usage: %s\n\n%s\n", c.usage(), c.Summary)
	if c.Help != "" {
		fmt.Fprintf(w, "\n%s\n", strings.TrimSpace(c.Help))
	}
	fs := flag.NewFlagSet(c.Name, flag.ContinueOnError)
	if c.Flags != nil {
		c.Flags(fs)
	}
	has := false
	fs.VisitAll(func(*flag.Flag) { has = true })
	if has {
		fmt.Fprintf(w, "\nflags:\n")
		fs.SetOutput(w)
		fs.PrintDefaults()
	}
}
