package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/cairn-backup/cairn/blockdiff"
	"github.com/cairn-backup/cairn/objstore"
	"github.com/cairn-backup/cairn/pgdump"
	"github.com/spf13/cobra"
)

// Exit codes, as cairn-block's.
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
)

// stdio is the process environment a command runs in, injectable for tests.
type stdio struct {
	in     io.Reader
	out    io.Writer
	err    io.Writer
	getenv func(string) string
}

// usageError marks an error as the caller's mistake (exit code 2).
type usageError struct{ err error }

func (u usageError) Error() string { return u.err.Error() }
func (u usageError) Unwrap() error { return u.err }

func usagef(format string, a ...any) error { return usageError{fmt.Errorf(format, a...)} }

// app holds the global flags and what the commands share.
type app struct {
	io           stdio
	repoURL      string
	passwordFile string
	logLevel     string
	dsn          string
	binDir       string
	log          *slog.Logger
}

// run executes one command line and returns the exit code.
func run(ctx context.Context, args []string, sio stdio) int {
	a := &app{io: sio}
	root := a.rootCmd()
	root.SetArgs(args)
	root.SetIn(sio.in)
	root.SetOut(sio.out)
	root.SetErr(sio.err)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return exitOK
	}
	fmt.Fprintln(sio.err, "cairn-pg:", err)
	var ue usageError
	if errors.As(err, &ue) || strings.HasPrefix(err.Error(), "unknown command") {
		fmt.Fprintln(sio.err, "Run 'cairn-pg --help' for usage.")
		return exitUsage
	}
	return exitFailure
}

// rootCmd builds the command tree.
func (a *app) rootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "cairn-pg",
		Short: "PostgreSQL logical dumps streamed into a deduplicating repository",
		Long: "cairn-pg streams pg_dumpall (or pg_dump -Fc per database) into a blockdiff repository on any\n" +
			"objstore URL (file://, s3://, mem://), restores dumps to stdout or into psql / pg_restore, and\n" +
			"lists them. --repo defaults to $CAIRN_REPO; the passphrase comes from $CAIRN_PASSWORD or\n" +
			"--password-file; the server from the libpq environment and --dsn / $CAIRN_PG_DSN.",
		SilenceUsage:      true,
		SilenceErrors:     true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error { return a.setup() },
	}
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	pf := root.PersistentFlags()
	pf.StringVar(&a.repoURL, "repo", "", "repository URL (default $CAIRN_REPO)")
	pf.StringVar(&a.passwordFile, "password-file", "", "file holding the repository passphrase (default $CAIRN_PASSWORD)")
	pf.StringVar(&a.logLevel, "log-level", "info", "log level: debug (also the tools' stderr), info, warn, error")
	pf.StringVar(&a.binDir, "bindir", "", "directory of pg_dumpall, pg_dump, psql, pg_restore (default $PG_BINDIR, else $PATH)")
	root.AddCommand(a.initCmd(), a.dumpCmd(), a.restoreCmd(), a.lsCmd())
	a.addRetentionCommands(root)
	return root
}

// setup configures logging once the flags are parsed.
func (a *app) setup() error {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(a.logLevel)); err != nil {
		return usagef("--log-level %q: want debug, info, warn or error", a.logLevel)
	}
	a.log = slog.New(slog.NewTextHandler(a.io.err, &slog.HandlerOptions{Level: lvl}))
	if a.binDir == "" {
		a.binDir = a.io.getenv("PG_BINDIR")
	}
	return nil
}

// conn is the server connection from the flags and the environment.
func (a *app) conn(dsn string) pgdump.Conn {
	return pgdump.Conn{DSN: dsn, BinDir: a.binDir}
}

// args wraps a cobra argument check so that its error is a usage error.
func args(check cobra.PositionalArgs) cobra.PositionalArgs {
	return func(cmd *cobra.Command, as []string) error {
		if err := check(cmd, as); err != nil {
			return usageError{err}
		}
		return nil
	}
}

// passphrase reads the passphrase from --password-file or $CAIRN_PASSWORD;
// nil when neither is set.
func (a *app) passphrase() ([]byte, error) {
	if a.passwordFile != "" {
		b, err := os.ReadFile(a.passwordFile)
		if err != nil {
			return nil, fmt.Errorf("password file: %w", err)
		}
		return []byte(strings.TrimRight(string(b), "\r\n")), nil
	}
	if p := a.io.getenv("CAIRN_PASSWORD"); p != "" {
		return []byte(p), nil
	}
	return nil, nil
}

// store opens the repository's store from --repo or $CAIRN_REPO.
func (a *app) store(ctx context.Context) (objstore.Store, error) {
	url := a.repoURL
	if url == "" {
		url = a.io.getenv("CAIRN_REPO")
	}
	if url == "" {
		return nil, usagef("no repository: give --repo URL or set CAIRN_REPO")
	}
	if !strings.Contains(url, "://") { // a bare path is a local directory
		url = "file://" + url
	}
	s, err := objstore.Open(ctx, url)
	if err != nil {
		return nil, fmt.Errorf("open repository: %w", err)
	}
	return s, nil
}

// withRepo opens the repository, runs fn and closes everything.
func (a *app) withRepo(ctx context.Context, fn func(r *blockdiff.Repository) error) error {
	s, err := a.store(ctx)
	if err != nil {
		return err
	}
	defer s.Close()
	pass, err := a.passphrase()
	if err != nil {
		return err
	}
	r, err := blockdiff.Open(ctx, s, blockdiff.Options{Passphrase: pass, Logger: a.log})
	if errors.Is(err, blockdiff.ErrPassphraseRequired) {
		return fmt.Errorf("%w: set CAIRN_PASSWORD or use --password-file", err)
	}
	if err != nil {
		return err
	}
	defer r.Close()
	return fn(r)
}

// parseLabels parses k=v arguments.
func parseLabels(kvs []string) (map[string]string, error) {
	m := map[string]string{}
	for _, kv := range kvs {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return nil, usagef("label %q: want key=value", kv)
		}
		if err := blockdiff.CheckLabel(k, v); err != nil {
			return nil, usageError{err}
		}
		m[k] = v
	}
	return m, nil
}
