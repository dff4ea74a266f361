// Package repocli is the repository layer of cairn's binaries, on top of
// the generic internal/cli: the repository flags (--repo, --password-file,
// --metrics-file, --no-lock, --lock-ttl, --lock-wait, --cache-dir) with their
// environment fallbacks, opening a blockdiff repository from them, the
// exit codes of repository errors, the --metrics-file of CronJob runs, and
// the commands every repository binary mounts (init, ls, enforce, cleanup,
// scrub, deep-scrub), so that the same flag means the same thing in each.
package repocli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/cairn-backup/cairn/blockdiff"
	"github.com/cairn-backup/cairn/internal/cli"
	"github.com/cairn-backup/cairn/objstore"
)

// Repo is the repository a command works on, from the shared flags and the
// environment ($CAIRN_REPO, $CAIRN_PASSWORD), on top of the binary's App.
type Repo struct {
	cli.App
	URL          string            // --repo
	PasswordFile string            // --password-file
	Options      blockdiff.Options // lock options from the flags; passphrase and logger are filled in
	MetricsFile  string            // --metrics-file, for node_exporter's textfile collector (metrics.go)

	metrics metrics
}

// AddFlags registers the global flags of cli.App and the repository flags
// on root.
func (r *Repo) AddFlags(root *cobra.Command) {
	r.App.AddFlags(root)
	pf := root.PersistentFlags()
	pf.StringVar(&r.URL, "repo", "", "repository URL or local path (default $CAIRN_REPO)")
	pf.StringVar(&r.PasswordFile, "password-file", "", "file holding the repository passphrase (default $CAIRN_PASSWORD)")
	pf.StringVar(&r.MetricsFile, "metrics-file", "",
		"write the run's Prometheus metrics to this *.prom file for node_exporter's textfile collector (replaced atomically)")
	pf.BoolVar(&r.Options.NoReadLock, "no-lock", false,
		"restore and read without the shared repository lock, for credentials that cannot write (a cleanup running meanwhile can make the restore fail; backups always lock)")
	pf.DurationVar(&r.Options.LockTTL, "lock-ttl", blockdiff.DefaultLockTTL, "repository locks of this process expire unless refreshed within this time")
	pf.DurationVar(&r.Options.LockWait, "lock-wait", blockdiff.DefaultLockWait, "how long to wait for a conflicting repository lock (backup waits for cleanup and back; 0: fail at once)")
	pf.StringVar(&r.Options.CacheDir, "cache-dir", "",
		`local cache of the repository's compacted index, by repository ID (default $CAIRN_CACHE_DIR, else $XDG_CACHE_HOME/cairn or ~/.cache/cairn; "none": no cache)`)
}

// Setup checks the flags and configures logging once they are parsed.
func (r *Repo) Setup() error {
	if err := r.App.Setup(); err != nil {
		return err
	}
	if r.Options.LockTTL <= 0 {
		return cli.Usagef("--lock-ttl %s: want a duration > 0", r.Options.LockTTL)
	}
	if r.Options.LockWait < 0 {
		return cli.Usagef("--lock-wait %s: want a duration >= 0", r.Options.LockWait)
	}
	if r.Options.CacheDir == "" {
		r.Options.CacheDir = r.IO.Getenv("CAIRN_CACHE_DIR")
	}
	switch r.Options.CacheDir {
	case "":
		r.Options.CacheDir = blockdiff.DefaultCacheDir(r.IO.Getenv)
	case "none":
		r.Options.CacheDir = ""
	}
	return checkMetricsFile(r.MetricsFile)
}

// Execute runs one command line of root and returns the exit code (see
// cli.App.Execute; repository errors get their own codes, ExitCode). Then,
// with --metrics-file, it writes the run's metrics (a usage error writes
// none: nothing ran). A metrics file that cannot be written is reported on
// stderr; it does not change the exit code of the work done.
func (r *Repo) Execute(ctx context.Context, root *cobra.Command, args []string) int {
	start := time.Now()
	r.Classify = ExitCode
	cmd, code := r.App.Execute(ctx, root, args)
	if r.MetricsFile == "" || code == cli.ExitUsage || cmd == nil || cmd == root {
		return code
	}
	if err := r.writeMetrics(root.Name(), cmd.Name(), start, code == cli.ExitOK); err != nil {
		fmt.Fprintf(r.IO.Err, "%s: --metrics-file: %v\n", root.Name(), err)
	}
	return code
}

// ExitCode maps repository errors to their exit codes: 10 no repository,
// 11 locked, 12 wrong or missing passphrase; 0 for any other error.
func ExitCode(err error) int {
	switch {
	case errors.Is(err, blockdiff.ErrNotRepository):
		return cli.ExitNoRepository
	case errors.Is(err, blockdiff.ErrLocked):
		return cli.ExitLocked
	case errors.Is(err, blockdiff.ErrWrongPassphrase), errors.Is(err, blockdiff.ErrPassphraseRequired):
		return cli.ExitWrongPassphrase
	}
	return 0
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
		return nil, cli.Usagef("no repository: give --repo URL or set CAIRN_REPO")
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

// storeAndPassphrase opens the store and reads the passphrase, what every
// command on a repository starts with; the caller closes the store.
func (r *Repo) storeAndPassphrase(ctx context.Context) (objstore.Store, []byte, error) {
	s, err := r.Store(ctx)
	if err != nil {
		return nil, nil, err
	}
	pass, err := r.Passphrase()
	if err != nil {
		s.Close()
		return nil, nil, err
	}
	return s, pass, nil
}

// WithRepo opens the repository, runs fn and closes everything.
func (r *Repo) WithRepo(ctx context.Context, fn func(*blockdiff.Repository) error) error {
	s, pass, err := r.storeAndPassphrase(ctx)
	if err != nil {
		return err
	}
	defer s.Close()
	opts := r.Options
	opts.Passphrase, opts.Logger = pass, r.Logger()
	if opts.LockWait == 0 {
		opts.LockWait = time.Nanosecond // --lock-wait 0: do not wait (the library's 0 is its default)
	}
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
// from --password-file or $CAIRN_PASSWORD, and logs what it made. With
// createBucket, a missing S3 bucket is created first; without it, a missing
// bucket is an error that says so.
func (r *Repo) Init(ctx context.Context, ic blockdiff.InitConfig, createBucket bool) error {
	s, pass, err := r.storeAndPassphrase(ctx)
	if err != nil {
		return err
	}
	defer s.Close()
	if ic.Encrypt && len(pass) == 0 {
		return cli.Usagef("--encrypt needs a passphrase: set CAIRN_PASSWORD or use --password-file")
	}
	if !ic.Encrypt && len(pass) > 0 {
		return cli.Usagef("a passphrase is set (CAIRN_PASSWORD or --password-file) but not --encrypt: " +
			"add --encrypt, or unset it for an unencrypted repository (a client with a passphrase never writes plaintext)")
	}
	if b, ok := s.(objstore.Bucketer); ok {
		if err := b.EnsureBucket(ctx, createBucket); err != nil {
			return err
		}
	} else if createBucket {
		return cli.Usagef("--create-bucket: the repository's store has no buckets (only s3:// has)")
	}
	repo, err := blockdiff.Init(ctx, s, ic, blockdiff.Options{Passphrase: pass, Logger: r.Logger()})
	if err != nil {
		return err
	}
	defer repo.Close()
	r.Logger().Info("repository created", "id", repo.Config().ID, "block_size", repo.BlockSize(), "encrypted", repo.Encrypted())
	return nil
}

// ParseLabels parses key=value arguments into labels.
func ParseLabels(kvs []string) (map[string]string, error) {
	m := map[string]string{}
	for _, kv := range kvs {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return nil, cli.Usagef("label %q: want key=value", kv)
		}
		if err := blockdiff.CheckLabel(k, v); err != nil {
			return nil, cli.UsageError{Err: err}
		}
		m[k] = v
	}
	return m, nil
}
