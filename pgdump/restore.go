package pgdump

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/cairn-backup/cairn/blockdiff"
)

// WriteTo streams version id to w (e.g. stdout), verifying every chunk.
func WriteTo(ctx context.Context, repo *blockdiff.Repository, id string, w io.Writer) error {
	return repo.RestoreStream(ctx, id, w, blockdiff.StreamRestoreOptions{})
}

// RestoreOptions describe a restore into a server.
type RestoreOptions struct {
	Conn // the target server
	// Database is the database to connect to: for a plain (pg_dumpall) dump
	// the initial one (default: the connection's), for a custom (pg_dump -Fc)
	// dump the one to restore into, which must exist.
	Database string
	// Strict fails the restore on any error the load reports, except that a
	// role already exists (pg_dumpall always creates the role it ran as).
	// Without it, errors are counted and returned in the report only, as
	// `psql -f dump.sql` would do.
	Strict bool
	// Args are extra arguments for psql or pg_restore (e.g. --no-owner).
	Args []string
	// Logger receives progress and, at debug level, the tool's stderr.
	Logger *slog.Logger
	// Progress, when set, is called with the bytes restored so far and the
	// version size.
	Progress func(done, total int64)
}

// Report is what a restore's tool printed on stderr.
type Report struct {
	Program string   // psql or pg_restore
	Errors  []string // ERROR lines (up to 100), benign ones included
	Benign  int      // of which "role ... already exists"
}

var (
	errorLineRe = regexp.MustCompile(`(?:^|:\s)(?:ERROR|FATAL|error):\s`)
	benignRe    = regexp.MustCompile(`role "[^"]*" already exists`)
)

// scanErrors is the stderr of a restore tool: it keeps the tail and the
// error lines.
type scanErrors struct {
	mu     sync.Mutex
	tail   *tail
	rest   []byte
	report *Report
}

func (s *scanErrors) Write(p []byte) (int, error) {
	_, _ = s.tail.Write(p)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rest = append(s.rest, p...)
	i := bytes.LastIndexByte(s.rest, '\n')
	if i < 0 {
		if len(s.rest) > 64<<10 { // a pathological line: forget it
			s.rest = s.rest[:0]
		}
		return len(p), nil
	}
	for line := range strings.SplitSeq(string(s.rest[:i]), "\n") {
		if errorLineRe.MatchString(line) {
			if benignRe.MatchString(line) {
				s.report.Benign++
			}
			if len(s.report.Errors) < 100 {
				s.report.Errors = append(s.report.Errors, line)
			}
		}
	}
	s.rest = append(s.rest[:0], s.rest[i+1:]...)
	return len(p), nil
}

// Restore loads version id into the target server: plain dumps through psql,
// custom-format dumps through pg_restore, both reading the version from
// their stdin as it is fetched and verified. It returns what the tool
// reported; the error is non-nil when the tool failed, the version could not
// be read, or (Strict) the load reported errors.
func Restore(ctx context.Context, repo *blockdiff.Repository, id string, opts RestoreOptions) (*Report, error) {
	v, err := repo.Version(ctx, id)
	if err != nil {
		return nil, err
	}
	if v.Kind != blockdiff.KindStream {
		return nil, fmt.Errorf("pgdump: version %s is a %s version, not a dump", id, v.Kind)
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	format := v.Labels[LabelFormat]
	var program string
	var args []string
	switch format {
	case FormatPlain, "":
		program = "psql"
		// No ON_ERROR_STOP: a cluster dump always fails to create the role
		// it ran as; errors are counted instead (Strict fails on the others).
		args = append([]string{"-X", "-q", "-v", "ON_ERROR_STOP=0"}, opts.dsnArgs(opts.Database)...)
		args = append(args, opts.Args...)
		args = append(args, "-f", "-")
	case FormatCustom:
		if opts.Database == "" {
			return nil, errors.New("pgdump: restore of a custom-format dump needs a target database")
		}
		program = "pg_restore"
		args = append([]string{"--no-password"}, opts.dsnArgs(opts.Database)...)
		if opts.Strict {
			args = append(args, "--exit-on-error")
		}
		args = append(args, opts.Args...)
	default:
		return nil, fmt.Errorf("pgdump: version %s has format %q: want %q or %q", id, format, FormatPlain, FormatCustom)
	}
	rep := &Report{Program: program}
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	cmd := opts.command(cctx, program, args...)
	se := &scanErrors{tail: &tail{max: 8 << 10, log: log, who: program}, report: rep}
	cmd.Stderr = se
	cmd.Stdout = io.Discard
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, fmt.Errorf("pgdump: %s: %w", program, err)
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("pgdump: %w", &ProcessError{Program: program, Err: err})
	}
	log.Info("restore starting", "version", id, "program", program, "conn", Redact(opts.DSN), "database", opts.Database)
	rerr := repo.RestoreStream(cctx, id, stdin, blockdiff.StreamRestoreOptions{Progress: opts.Progress})
	cerr := stdin.Close()
	if rerr != nil {
		cancel() // the tool saw a truncated input: stop it rather than let it commit a prefix
	}
	werr := cmd.Wait()
	if werr != nil {
		werr = &ProcessError{Program: program, Err: werr, Stderr: se.tail.String()}
	}
	switch {
	case rerr != nil && werr != nil && !errors.Is(rerr, io.ErrClosedPipe) && !isPipeErr(rerr):
		return rep, fmt.Errorf("pgdump: restore %s: %w (%v)", id, rerr, werr)
	case werr != nil:
		return rep, fmt.Errorf("pgdump: restore %s: %w", id, werr)
	case rerr != nil:
		return rep, fmt.Errorf("pgdump: restore %s: %w", id, rerr)
	case cerr != nil:
		return rep, fmt.Errorf("pgdump: restore %s: close %s's input: %w", id, program, cerr)
	}
	if opts.Strict && len(rep.Errors) > rep.Benign {
		return rep, fmt.Errorf("pgdump: restore %s: %s reported %d errors, first: %s",
			id, program, len(rep.Errors)-rep.Benign, firstReal(rep))
	}
	log.Info("restore done", "version", id, "errors", len(rep.Errors), "benign", rep.Benign)
	return rep, nil
}

func firstReal(r *Report) string {
	for _, e := range r.Errors {
		if !benignRe.MatchString(e) {
			return e
		}
	}
	return ""
}

func isPipeErr(err error) bool {
	return err != nil && (strings.Contains(err.Error(), "broken pipe") || strings.Contains(err.Error(), "file already closed"))
}

// VerifyOptions describe a verification load.
type VerifyOptions struct {
	Conn // a server the scratch database is created on
	// Logger receives progress and, at debug level, the tools' stderr.
	Logger *slog.Logger
}

// Verify loads version id into a scratch database that it creates and drops
// afterwards, and fails when the load reports any error: a custom-format
// (pg_dump -Fc) dump goes into a new database on the given server. A plain
// cluster dump (pg_dumpall) creates roles and databases of its own, so the
// given server must itself be a scratch cluster (an empty, throwaway
// instance): the dump is loaded there strictly.
func Verify(ctx context.Context, repo *blockdiff.Repository, id string, opts VerifyOptions) (*Report, error) {
	v, err := repo.Version(ctx, id)
	if err != nil {
		return nil, err
	}
	ro := RestoreOptions{Conn: opts.Conn, Strict: true, Logger: opts.Logger}
	if v.Labels[LabelFormat] != FormatCustom {
		return Restore(ctx, repo, id, ro)
	}
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	scratch := "cairn_verify_" + hex.EncodeToString(b)
	psql := func(sql string) error {
		_, err := opts.output(ctx, "psql", append([]string{"-X", "-q", "-v", "ON_ERROR_STOP=1", "-c", sql}, opts.dsnArgs("")...)...)
		return err
	}
	if err := psql(`CREATE DATABASE "` + scratch + `"`); err != nil {
		return nil, fmt.Errorf("pgdump: verify %s: create scratch database: %w", id, err)
	}
	defer func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 60*time.Second)
		defer cancel()
		_, _ = opts.output(dctx, "psql", append([]string{"-X", "-q", "-c", `DROP DATABASE IF EXISTS "` + scratch + `" WITH (FORCE)`}, opts.dsnArgs("")...)...)
	}()
	ro.Database = scratch
	ro.Args = []string{"--no-owner", "--no-acl"}
	return Restore(ctx, repo, id, ro)
}
