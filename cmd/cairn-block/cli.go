package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/cairn-backup/cairn/blockdiff"
	"github.com/cairn-backup/cairn/objstore"
	"github.com/spf13/cobra"
)

// Exit codes.
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
	log          *slog.Logger
	lockTTL      time.Duration // --lock-ttl (maintenance.go)
	lockWait     time.Duration // --lock-wait
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
	fmt.Fprintln(sio.err, "cairn-block:", err)
	var ue usageError
	if errors.As(err, &ue) || strings.HasPrefix(err.Error(), "unknown command") {
		fmt.Fprintln(sio.err, "Run 'cairn-block --help' for usage.")
		return exitUsage
	}
	return exitFailure
}

// rootCmd builds the command tree.
func (a *app) rootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "cairn-block",
		Short: "Block-level, deduplicating backups of volumes (Benji's verbs)",
		Long: "cairn-block backs up volume images (files, block devices) into a blockdiff repository on\n" +
			"any objstore URL (file://, s3://, mem://), restores them verified, and manages versions.\n" +
			"--repo defaults to $CAIRN_REPO; the passphrase comes from $CAIRN_PASSWORD or --password-file.",
		SilenceUsage:      true,
		SilenceErrors:     true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error { return a.setup() },
	}
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	pf := root.PersistentFlags()
	pf.StringVar(&a.repoURL, "repo", "", "repository URL (default $CAIRN_REPO)")
	pf.StringVar(&a.passwordFile, "password-file", "", "file holding the repository passphrase (default $CAIRN_PASSWORD)")
	pf.StringVar(&a.logLevel, "log-level", "info", "log level: debug, info, warn, error")
	root.AddCommand(a.initCmd(), a.backupCmd(), a.restoreCmd(), a.lsCmd(), a.rmCmd(),
		a.protectCmd(true), a.protectCmd(false), a.labelCmd())
	a.addCephCommands(root)        // rbd:// for backup and restore, backup-all (rbdcmd.go)
	a.addMaintenanceCommands(root) // scrub, enforce, cleanup, locks, nbd... (maintenance.go)
	return root
}

// setup configures logging once the flags are parsed.
func (a *app) setup() error {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(a.logLevel)); err != nil {
		return usagef("--log-level %q: want debug, info, warn or error", a.logLevel)
	}
	a.log = slog.New(slog.NewTextHandler(a.io.err, &slog.HandlerOptions{Level: lvl}))
	return nil
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
	r, err := blockdiff.Open(ctx, s, blockdiff.Options{Passphrase: pass, Logger: a.log,
		LockTTL: a.lockTTL, LockWait: a.lockWait})
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
