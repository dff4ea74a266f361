// Package cli holds what cairn's binaries share: exit codes, usage errors,
// the repository flags (--repo, --password-file, --log-level) with their
// environment fallbacks, and opening a blockdiff repository from them.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/cairn-backup/cairn/blockdiff"
	"github.com/cairn-backup/cairn/objstore"
	"github.com/spf13/cobra"
)

// Exit codes of every cairn binary.
const (
	ExitOK      = 0
	ExitFailure = 1
	ExitUsage   = 2
)

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

// execute runs one command line of root and returns the command that ran
// and the exit code (Repo.Execute).
func execute(ctx context.Context, root *cobra.Command, args []string, sio IO) (*cobra.Command, int) {
	root.SilenceUsage, root.SilenceErrors = true, true
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return UsageError{Err: err} })
	root.SetArgs(args)
	root.SetIn(sio.In)
	root.SetOut(sio.Out)
	root.SetErr(sio.Err)
	cmd, err := root.ExecuteContextC(ctx)
	if err == nil {
		return cmd, ExitOK
	}
	fmt.Fprintln(sio.Err, root.Name()+":", err)
	var ue UsageError
	if errors.As(err, &ue) || strings.HasPrefix(err.Error(), "unknown command") {
		fmt.Fprintf(sio.Err, "Run '%s --help' for usage.\n", root.Name())
		return cmd, ExitUsage
	}
	return cmd, ExitFailure
}

// Execute runs one command line of root and returns the exit code: errors
// are printed as "NAME: error", and usage errors (bad flags, arguments,
// unknown commands) exit 2 with a pointer to --help. Then, with
// --metrics-file, it writes the run's metrics (a usage error writes none:
// nothing ran). A metrics file that cannot be written is reported on
// stderr; it does not change the exit code of the work done.
func (r *Repo) Execute(ctx context.Context, root *cobra.Command, args []string) int {
	start := time.Now()
	cmd, code := execute(ctx, root, args, r.IO)
	if r.MetricsFile == "" || code == ExitUsage || cmd == nil || cmd == root {
		return code
	}
	if err := r.writeMetrics(root.Name(), cmd.Name(), start, code == ExitOK); err != nil {
		fmt.Fprintf(r.IO.Err, "%s: --metrics-file: %v\n", root.Name(), err)
	}
	return code
}

// Repo is the repository a command works on, from the shared flags and the
// environment ($CAIRN_REPO, $CAIRN_PASSWORD).
type Repo struct {
	IO           IO
	URL          string            // --repo
	PasswordFile string            // --password-file
	LogLevel     string            // --log-level
	Log          *slog.Logger      // set by Setup
	Options      blockdiff.Options // extra options of the binary (locks); passphrase and logger are filled in
	MetricsFile  string            // --metrics-file, for node_exporter's textfile collector (metrics.go)

	metrics metrics
}

// AddFlags registers --repo, --password-file, --log-level, --metrics-file
// and --no-lock on root.
func (r *Repo) AddFlags(root *cobra.Command, logLevelHelp string) {
	pf := root.PersistentFlags()
	pf.StringVar(&r.URL, "repo", "", "repository URL (default $CAIRN_REPO)")
	pf.StringVar(&r.PasswordFile, "password-file", "", "file holding the repository passphrase (default $CAIRN_PASSWORD)")
	pf.StringVar(&r.LogLevel, "log-level", "info", logLevelHelp)
	pf.StringVar(&r.MetricsFile, "metrics-file", "",
		"write the run's Prometheus metrics to this *.prom file for node_exporter's textfile collector (replaced atomically)")
	pf.BoolVar(&r.Options.NoReadLock, "no-lock", false,
		"restore and read without the shared repository lock, for credentials that cannot write (a cleanup running meanwhile can make the restore fail; backups always lock)")
}

// Setup configures logging once the flags are parsed.
func (r *Repo) Setup() error {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(r.LogLevel)); err != nil {
		return Usagef("--log-level %q: want debug, info, warn or error", r.LogLevel)
	}
	if err := checkMetricsFile(r.MetricsFile); err != nil {
		return err
	}
	r.Log = slog.New(slog.NewTextHandler(r.IO.Err, &slog.HandlerOptions{Level: lvl}))
	return nil
}

// Passphrase reads the passphrase from --password-file or $CAIRN_PASSWORD;
// nil when neither is set. It is never a flag value, so it never shows in ps.
func (r *Repo) Passphrase() ([]byte, error) {
	if r.PasswordFile != "" {
		b, err := os.ReadFile(r.PasswordFile)
		if err != nil {
			return nil, fmt.Errorf("password file: %w", err)
		}
		return []byte(strings.TrimRight(string(b), "\r\n")), nil
	}
	if p := r.IO.Getenv("CAIRN_PASSWORD"); p != "" {
		return []byte(p), nil
	}
	return nil, nil
}

// Store opens the repository's store from --repo or $CAIRN_REPO; a bare
// path, absolute or relative to the working directory, is a local folder.
func (r *Repo) Store(ctx context.Context) (objstore.Store, error) {
	url := r.URL
	if url == "" {
		url = r.IO.Getenv("CAIRN_REPO")
	}
	if url == "" {
		return nil, Usagef("no repository: give --repo URL or set CAIRN_REPO")
	}
	if !strings.Contains(url, "://") {
		abs, err := filepath.Abs(url) // file:// URLs take absolute paths only
		if err != nil {
			return nil, fmt.Errorf("repository path %q: %w", url, err)
		}
		url = "file://" + abs
	}
	s, err := objstore.Open(ctx, url)
	if err != nil {
		return nil, fmt.Errorf("open repository: %w", err)
	}
	return s, nil
}

// WithRepo opens the repository, runs fn and closes everything.
func (r *Repo) WithRepo(ctx context.Context, fn func(*blockdiff.Repository) error) error {
	s, err := r.Store(ctx)
	if err != nil {
		return err
	}
	defer s.Close()
	pass, err := r.Passphrase()
	if err != nil {
		return err
	}
	opts := r.Options
	opts.Passphrase, opts.Logger = pass, r.Log
	repo, err := blockdiff.Open(ctx, s, opts)
	if errors.Is(err, blockdiff.ErrPassphraseRequired) {
		return fmt.Errorf("%w: set CAIRN_PASSWORD or use --password-file", err)
	}
	if err != nil {
		return err
	}
	defer repo.Close()
	return fn(repo)
}

// Init creates a repository at --repo with ic, the passphrase of --encrypt
// from --password-file or $CAIRN_PASSWORD, and logs what it made.
func (r *Repo) Init(ctx context.Context, ic blockdiff.InitConfig) error {
	s, err := r.Store(ctx)
	if err != nil {
		return err
	}
	defer s.Close()
	pass, err := r.Passphrase()
	if err != nil {
		return err
	}
	if ic.Encrypt && len(pass) == 0 {
		return Usagef("--encrypt needs a passphrase: set CAIRN_PASSWORD or use --password-file")
	}
	repo, err := blockdiff.Init(ctx, s, ic, blockdiff.Options{Passphrase: pass, Logger: r.Log})
	if err != nil {
		return err
	}
	defer repo.Close()
	r.Log.Info("repository created", "id", repo.Config().ID, "block_size", repo.BlockSize(), "encrypted", repo.Encrypted())
	return nil
}

// ParseLabels parses key=value arguments into labels.
func ParseLabels(kvs []string) (map[string]string, error) {
	m := map[string]string{}
	for _, kv := range kvs {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return nil, Usagef("label %q: want key=value", kv)
		}
		if err := blockdiff.CheckLabel(k, v); err != nil {
			return nil, UsageError{Err: err}
		}
		m[k] = v
	}
	return m, nil
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
