// Package cli is the command-line layer every cairn binary shares: the
// process IO, the exit codes, usage errors, the global flags (--log-level,
// --log-format, --json, --progress-interval), progress reports, the version
// command and the run loop that turns an error into an exit code. It knows
// nothing of repositories: internal/repocli adds those on top.
package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/pprof"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"
)

// Exit codes of every cairn binary (restic's numbers where restic has one).
const (
	ExitOK              = 0   // the command did what it was asked
	ExitFailure         = 1   // it failed
	ExitUsage           = 2   // bad flags, arguments or configuration: nothing ran
	ExitPartial         = 3   // some items (volumes of a backup-all) failed, the others succeeded
	ExitNoRepository    = 10  // no repository at --repo
	ExitLocked          = 11  // the repository is locked by another process
	ExitWrongPassphrase = 12  // the passphrase does not open the repository
	ExitInterrupted     = 130 // SIGINT or SIGTERM ended the command
)

// ExitCodesHelp is the exit-code table every binary's --help shows.
const ExitCodesHelp = `Exit codes:
  0    success
  1    failure
  2    usage error (bad flag, argument or configuration; nothing ran)
  3    partial: some volumes failed, the others were backed up
  10   no repository at --repo
  11   repository locked by another process
  12   wrong passphrase (or none for an encrypted repository)
  130  interrupted (SIGINT, SIGTERM)`

// IO is the process environment a command runs in, injectable for tests.
type IO struct {
	In     io.Reader
	Out    io.Writer
	Err    io.Writer
	Getenv func(string) string
}

// StdIO is the real process environment.
func StdIO() IO { return IO{In: os.Stdin, Out: os.Stdout, Err: os.Stderr, Getenv: os.Getenv} }

// UsageError marks an error as the caller's mistake (exit code 2).
type UsageError struct{ Err error }

func (u UsageError) Error() string { return u.Err.Error() }
func (u UsageError) Unwrap() error { return u.Err }

// Usagef returns a UsageError with a formatted message.
func Usagef(format string, a ...any) error { return UsageError{Err: fmt.Errorf(format, a...)} }

// Args wraps a cobra argument check so that its error is a usage error.
func Args(check cobra.PositionalArgs) cobra.PositionalArgs {
	return func(cmd *cobra.Command, as []string) error {
		if err := check(cmd, as); err != nil {
			return UsageError{Err: err}
		}
		return nil
	}
}

// ExitError gives an error the exit code it ends the process with.
type ExitError struct {
	Code int
	Err  error
}

func (e ExitError) Error() string { return e.Err.Error() }
func (e ExitError) Unwrap() error { return e.Err }

// WithExitCode returns err carrying code; nil stays nil.
func WithExitCode(code int, err error) error {
	if err == nil {
		return nil
	}
	return ExitError{Code: code, Err: err}
}

// Outcome is the error of a run over several items (the volumes of a
// backup-all): nil when none failed, exit 3 (partial) when some failed and
// others succeeded, a plain failure when all failed. what names the items.
func Outcome(op, what string, succeeded, failed int) error {
	if failed == 0 {
		return nil
	}
	err := fmt.Errorf("%s: %d of %d %s failed", op, failed, succeeded+failed, what)
	if succeeded > 0 {
		return WithExitCode(ExitPartial, err)
	}
	return err
}

// Main runs a binary: run gets a context that SIGINT and SIGTERM cancel,
// the arguments and the real IO, and its result is the exit code.
// $CAIRN_CPUPROFILE names a file for a CPU profile of the whole run (for
// `go tool pprof`), so a slow CronJob can be profiled without a rebuild.
func Main(run func(ctx context.Context, args []string, sio IO) int) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	stopProfile := startCPUProfile(os.Getenv("CAIRN_CPUPROFILE"), os.Stderr)
	code := run(ctx, os.Args[1:], StdIO())
	stopProfile()
	stop()
	os.Exit(code)
}

// startCPUProfile starts a CPU profile into path (none when path is empty)
// and returns what stops it; a profile that cannot start is reported and
// skipped, never a reason to fail the run.
func startCPUProfile(path string, stderr io.Writer) func() {
	if path == "" {
		return func() {}
	}
	f, err := os.Create(path)
	if err == nil {
		if err = pprof.StartCPUProfile(f); err != nil {
			f.Close()
		}
	}
	if err != nil {
		fmt.Fprintf(stderr, "CAIRN_CPUPROFILE: %v (running without a profile)\n", err)
		return func() {}
	}
	return func() {
		pprof.StopCPUProfile()
		if err := f.Close(); err != nil {
			fmt.Fprintf(stderr, "CAIRN_CPUPROFILE: %v\n", err)
		}
	}
}

// App is one binary's command line: its IO, the global flags and what
// Setup builds from them. Commands read App.Log and App.JSON.
type App struct {
	IO IO

	LogLevel         string        // --log-level
	LogFormat        string        // --log-format: text or json
	JSON             bool          // --json: results on stdout and progress on stderr as JSON
	ProgressInterval time.Duration // --progress-interval: log-line progress when stderr is no terminal
	Log              *slog.Logger  // set by Setup

	// Classify maps errors of the layers above (repositories, locks) to
	// exit codes; 0 means it has no opinion. Nil: only the generic rules.
	Classify func(error) int
}

// AddFlags registers the global flags on root.
func (a *App) AddFlags(root *cobra.Command) {
	pf := root.PersistentFlags()
	pf.StringVar(&a.LogLevel, "log-level", "info", "log level: debug, info, warn, error")
	pf.StringVar(&a.LogFormat, "log-format", "text", "log format on stderr: text or json")
	pf.BoolVar(&a.JSON, "json", false, "print results as JSON on stdout (and progress as JSON lines on stderr)")
	pf.DurationVar(&a.ProgressInterval, "progress-interval", 10*time.Second,
		"when stderr is not a terminal, log progress this often (0: never)")
	if root.Long == "" {
		root.Long = root.Short
	}
	root.Long += "\n\n" + ExitCodesHelp
}

// Setup checks the global flags and builds the logger; call it from the
// root's PersistentPreRunE.
func (a *App) Setup() error {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(a.LogLevel)); err != nil {
		return Usagef("--log-level %q: want debug, info, warn or error", a.LogLevel)
	}
	if a.ProgressInterval < 0 {
		return Usagef("--progress-interval %s: want a duration >= 0", a.ProgressInterval)
	}
	// The logger, progress reports and the command itself write to stderr
	// from several goroutines: one lock keeps their lines whole.
	if _, ok := a.IO.Err.(*syncWriter); !ok {
		a.IO.Err = &syncWriter{w: a.IO.Err}
	}
	o := &slog.HandlerOptions{Level: lvl}
	switch a.LogFormat {
	case "text":
		a.Log = slog.New(slog.NewTextHandler(a.IO.Err, o))
	case "json":
		a.Log = slog.New(slog.NewJSONHandler(a.IO.Err, o))
	default:
		return Usagef("--log-format %q: want text or json", a.LogFormat)
	}
	return nil
}

// Logger returns the logger, a discarding one before Setup ran.
func (a *App) Logger() *slog.Logger {
	if a.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return a.Log
}

// WriteJSON writes v to stdout as indented JSON, the form of every --json
// result.
func (a *App) WriteJSON(v any) error { return WriteJSON(a.IO.Out, v) }

// WriteJSON writes v to w as indented JSON.
func WriteJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// Execute runs one command line of root and returns the command that ran
// and the exit code. Errors are printed as "NAME: error"; usage errors
// (bad flags, arguments, unknown commands) add a pointer to --help.
func (a *App) Execute(ctx context.Context, root *cobra.Command, args []string) (*cobra.Command, int) {
	root.SilenceUsage, root.SilenceErrors = true, true
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return UsageError{Err: err} })
	root.SetArgs(args)
	root.SetIn(a.IO.In)
	root.SetOut(a.IO.Out)
	root.SetErr(a.IO.Err)
	cmd, err := root.ExecuteContextC(ctx)
	if err == nil {
		return cmd, ExitOK
	}
	code := a.ExitCode(ctx, err)
	msg := err.Error()
	if code == ExitInterrupted && !strings.Contains(msg, "interrupt") {
		msg = "interrupted: " + msg
	}
	fmt.Fprintln(a.IO.Err, root.Name()+":", msg)
	if code == ExitUsage {
		fmt.Fprintf(a.IO.Err, "Run '%s --help' for usage.\n", root.Name())
	}
	return cmd, code
}

// ExitCode is the exit code err ends a command with: an explicit
// ExitError's, a usage error's, 130 when ctx was cancelled (a signal), then
// what Classify says, else 1.
func (a *App) ExitCode(ctx context.Context, err error) int {
	var ee ExitError
	var ue UsageError
	switch {
	case err == nil:
		return ExitOK
	case errors.As(err, &ue) || strings.HasPrefix(err.Error(), "unknown command"):
		return ExitUsage
	case errors.As(err, &ee):
		return ee.Code
	case ctx.Err() != nil:
		return ExitInterrupted
	}
	if a.Classify != nil {
		if c := a.Classify(err); c != 0 {
			return c
		}
	}
	return ExitFailure
}

// HumanBytes formats n with binary units, as in "4.0 MiB".
func HumanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// syncWriter serializes writes to w.
type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

// unwrap lets IsTerminal see the file behind the lock.
func (s *syncWriter) unwrap() io.Writer { return s.w }
