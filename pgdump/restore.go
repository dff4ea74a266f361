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
	"os"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
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

// scanErrors reads the stderr of a restore tool for its error lines.
type scanErrors struct {
	mu     sync.Mutex
	rest   []byte
	report *Report
}

func (s *scanErrors) Write(p []byte) (int, error) {
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
	cmd := opts.command(program, args...)
	cmd.Stderr, cmd.Logger = &scanErrors{report: rep}, log
	stdin, err := cmd.Writer(ctx, io.Discard)
	if err != nil {
		return nil, fmt.Errorf("pgdump: %w", err)
	}
	log.Info("restore starting", "version", id, "program", program, "conn", Redact(opts.DSN), "database", opts.Database)
	rerr := repo.RestoreStream(ctx, id, stdin, blockdiff.StreamRestoreOptions{Progress: opts.Progress})
	var werr error
	if rerr != nil {
		// The tool would see a truncated input: stop it rather than let it
		// commit a prefix.
		werr = stdin.Stop()
	} else {
		werr = stdin.Close()
	}
	switch {
	case rerr != nil && werr != nil && !errors.Is(rerr, io.ErrClosedPipe) && !isPipeErr(rerr):
		return rep, fmt.Errorf("pgdump: restore %s: %w (%v)", id, rerr, werr)
	case werr != nil:
		return rep, fmt.Errorf("pgdump: restore %s: %w", id, werr)
	case rerr != nil:
		return rep, fmt.Errorf("pgdump: restore %s: %w", id, rerr)
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
	// Conn is the server a custom-format dump's scratch database is created
	// on. For a plain cluster dump, a non-empty Conn.DSN names a scratch
	// server to load into; with an empty DSN, Verify starts a scratch cluster
	// of its own from Conn.BinDir (initdb, pg_ctl) and removes it afterwards.
	Conn
	// Superuser is the bootstrap role of a scratch cluster: the role the dump
	// was made by (default "postgres").
	Superuser string
	// TempDir holds a scratch cluster's data ("" for the system's).
	TempDir string
	// Logger receives progress and, at debug level, the tools' stderr.
	Logger *slog.Logger
}

// Verify loads version id into a scratch database or cluster and fails when
// the load reports any error (but that the superuser role exists): a
// custom-format (pg_dump -Fc) dump goes into a database it creates on the
// given server and drops afterwards. A plain cluster dump (pg_dumpall)
// creates roles and databases of its own, so it goes into a scratch cluster
// that Verify starts and removes (or into the given server, which must then
// be a throwaway instance).
func Verify(ctx context.Context, repo *blockdiff.Repository, id string, opts VerifyOptions) (*Report, error) {
	v, err := repo.Version(ctx, id)
	if err != nil {
		return nil, err
	}
	ro := RestoreOptions{Conn: opts.Conn, Strict: true, Logger: opts.Logger}
	if v.Labels[LabelFormat] != FormatCustom {
		if opts.DSN == "" {
			sc, err := StartScratchCluster(ctx, opts.BinDir, opts.TempDir, opts.Superuser)
			if err != nil {
				return nil, err
			}
			defer func() { _ = sc.Stop(context.WithoutCancel(ctx)) }()
			ro.Conn = sc.Conn
		}
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

// ScratchCluster is a throwaway PostgreSQL instance in a temporary
// directory, reachable only over its Unix socket, for verifying cluster
// dumps. Stop removes it.
type ScratchCluster struct {
	Conn        // connection to its postgres database as its superuser
	dir  string // data directory and socket directory
	run  func(ctx context.Context, name string, args ...string) error
}

// StartScratchCluster runs initdb and starts postgres from binDir (which
// must hold initdb and pg_ctl) in a new temporary directory under tmp (""
// for the system's). superuser names the bootstrap role: use the role the
// dump was made by, so that its objects keep their owner. When this process
// runs as root, the cluster runs as the user postgres (initdb refuses root).
func StartScratchCluster(ctx context.Context, binDir, tmp, superuser string) (*ScratchCluster, error) {
	if superuser == "" {
		superuser = "postgres"
	}
	dir, err := os.MkdirTemp(tmp, "cairn-pg-scratch-")
	if err != nil {
		return nil, fmt.Errorf("pgdump: scratch cluster: %w", err)
	}
	var cred *syscall.Credential
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			os.RemoveAll(dir)
			return nil, fmt.Errorf("pgdump: scratch cluster: running as root needs a user postgres: %w", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
		if err := os.Chown(dir, uid, gid); err != nil {
			os.RemoveAll(dir)
			return nil, fmt.Errorf("pgdump: scratch cluster: %w", err)
		}
	}
	c := Conn{BinDir: binDir}
	s := &ScratchCluster{dir: dir}
	s.run = func(ctx context.Context, name string, args ...string) error {
		cmd := c.command(name, args...)
		cmd.Dir = dir
		if cred != nil {
			cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
		}
		_, err := cmd.CombinedOutput(ctx)
		return err
	}
	data := filepath.Join(dir, "data")
	if err := s.run(ctx, "initdb", "-D", data, "-U", superuser, "-E", "UTF8", "--locale=C", "--auth=trust", "--no-sync"); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("pgdump: scratch cluster: %w", err)
	}
	opts := fmt.Sprintf("-c listen_addresses='' -c unix_socket_directories='%s' -c fsync=off -c full_page_writes=off -c synchronous_commit=off -p 5432", dir)
	if err := s.run(ctx, "pg_ctl", "-D", data, "-o", opts, "-l", filepath.Join(dir, "log"), "-w", "-t", "120", "start"); err != nil {
		log, _ := os.ReadFile(filepath.Join(dir, "log"))
		_ = s.Stop(context.WithoutCancel(ctx))
		return nil, fmt.Errorf("pgdump: scratch cluster: %w: %s", err, strings.TrimSpace(string(log)))
	}
	s.Conn = Conn{DSN: fmt.Sprintf("host=%s port=5432 user=%s dbname=postgres", dir, superuser), BinDir: binDir}
	return s, nil
}

// Stop stops the scratch cluster (immediately: it holds nothing to keep) and
// removes its directory.
func (s *ScratchCluster) Stop(ctx context.Context) error {
	var err error
	if _, serr := os.Stat(filepath.Join(s.dir, "data", "postmaster.pid")); serr == nil {
		err = s.run(ctx, "pg_ctl", "-D", filepath.Join(s.dir, "data"), "-m", "immediate", "-w", "stop")
	}
	if rerr := os.RemoveAll(s.dir); err == nil && rerr != nil {
		err = rerr
	}
	return err
}
