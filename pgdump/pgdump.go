// Package pgdump backs up PostgreSQL with its own logical dump tools streamed
// straight into a blockdiff repository, replacing the seed's Velero flow
// (pg_dumpall to an ephemeral volume, a file-system backup of it, a delete).
//
// Dump runs pg_dumpall (or, per database, pg_dump -Fc plus pg_dumpall
// --globals-only) as a child process and streams its stdout into a stream
// version: no dump file ever touches disk. Content-defined chunking makes a
// dump that changed a little store a little. A child that exits non-zero,
// dies from a signal or is cancelled leaves no valid version, and the error
// carries the tail of its stderr.
//
// Restore streams a version back out: to a writer (stdout), or into psql
// (plain dumps) or pg_restore (custom-format dumps) against a target
// connection. Verify loads a version into a scratch database and reports any
// error the load printed.
//
// Connections use the libpq environment (PGHOST, PGPORT, PGUSER, PGPASSWORD,
// PGDATABASE, PGSSLMODE, ~/.pgpass) and, optionally, a connection string
// (postgres:// URI or key=value). A password in the connection string is
// passed to the child processes in PGPASSWORD, never on their command line,
// and never logged.
package pgdump

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Labels that Dump sets on every version it writes.
const (
	LabelCluster       = "pg.cluster"        // the cluster name given in DumpOptions
	LabelServerVersion = "pg.server-version" // server_version of the dumped server
	LabelDatabases     = "pg.databases"      // comma-separated databases (dumpall), or the one dumped
	LabelToolVersion   = "pg.tool-version"   // `pg_dumpall --version` / `pg_dump --version`
	LabelFormat        = "pg.format"         // FormatPlain or FormatCustom
	LabelContent       = "pg.content"        // ContentCluster, ContentGlobals or ContentDatabase
	LabelRun           = "pg.run"            // the ID shared by the versions of one Dump
)

// Dump formats (LabelFormat): what restores a version.
const (
	FormatPlain  = "plain"  // SQL text, restored with psql
	FormatCustom = "custom" // pg_dump -Fc archive, restored with pg_restore
)

// Version contents (LabelContent).
const (
	ContentCluster  = "cluster"  // pg_dumpall: roles, tablespaces and every database
	ContentGlobals  = "globals"  // pg_dumpall --globals-only
	ContentDatabase = "database" // pg_dump -Fc of one database
)

// Mode selects the dump tool.
type Mode string

// Dump modes.
const (
	// ModeDumpAll runs pg_dumpall: one plain SQL stream of the whole cluster.
	ModeDumpAll Mode = "dumpall"
	// ModePerDatabase runs pg_dumpall --globals-only and then pg_dump -Fc -Z0
	// for each database: one version per database, restorable one by one,
	// uncompressed so that it deduplicates (the repository compresses).
	ModePerDatabase Mode = "per-database"
)

// Conn says how the tools reach a server.
type Conn struct {
	// DSN is a libpq connection string (postgres:// URI or key=value pairs);
	// empty means the libpq environment alone.
	DSN string
	// BinDir holds pg_dumpall, pg_dump, psql and pg_restore; empty means $PATH.
	BinDir string
	// Env is added to the children's environment (after the process's own).
	Env []string
}

// bin returns the path of a PostgreSQL program.
func (c Conn) bin(name string) string {
	if c.BinDir == "" {
		return name
	}
	return filepath.Join(c.BinDir, name)
}

// splitPassword removes a password from a connection string and returns the
// rest and the password ("" when there is none).
func splitPassword(dsn string) (string, string) {
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		u, err := url.Parse(dsn)
		if err != nil {
			return dsn, ""
		}
		var pass string
		if u.User != nil {
			if p, ok := u.User.Password(); ok {
				pass = p
				u.User = url.User(u.User.Username())
			}
		}
		q := u.Query()
		if p := q.Get("password"); p != "" {
			pass = p
			q.Del("password")
			u.RawQuery = q.Encode()
		}
		return u.String(), pass
	}
	m := kvPasswordRe.FindStringSubmatchIndex(dsn)
	if m == nil {
		return dsn, ""
	}
	pass := dsn[m[2]:m[3]]
	if strings.HasPrefix(pass, "'") {
		pass = strings.NewReplacer(`\'`, `'`, `\\`, `\`).Replace(pass[1 : len(pass)-1])
	}
	return strings.TrimSpace(strings.TrimRight(dsn[:m[0]], " \t") + " " + strings.TrimLeft(dsn[m[1]:], " \t")), pass
}

var kvPasswordRe = regexp.MustCompile(`(?:^|\s)password\s*=\s*('(?:[^'\\]|\\.)*'|\S+)`)

// Redact returns dsn with any password replaced by "xxx", for messages.
func Redact(dsn string) string {
	rest, pass := splitPassword(dsn)
	if pass == "" {
		return dsn
	}
	if strings.Contains(rest, "://") {
		return rest + " (password xxx)"
	}
	return rest + " password=xxx"
}

// withDatabase returns dsn pointing at database db.
func withDatabase(dsn, db string) string {
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		u, err := url.Parse(dsn)
		if err == nil {
			u.Path = "/" + db
			u.RawPath = ""
			return u.String()
		}
	}
	// key=value: libpq uses the last of repeated keywords.
	return strings.TrimSpace(dsn + " dbname='" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(db) + "'")
}

// command builds a child process of program name with the connection's
// environment; the password of the DSN goes into PGPASSWORD.
func (c Conn) command(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, c.bin(name), args...)
	env := append(os.Environ(), c.Env...)
	if _, pass := splitPassword(c.DSN); pass != "" {
		env = append(env, "PGPASSWORD="+pass)
	}
	cmd.Env = env
	// On cancel: SIGTERM first (the tools exit cleanly), SIGKILL after 5s.
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

// dsnArgs returns the connection arguments of a tool: -d with the DSN
// (password removed) for a database dsn, or nothing.
func (c Conn) dsnArgs(db string) []string {
	dsn, _ := splitPassword(c.DSN)
	if db != "" {
		if dsn == "" {
			return []string{"-d", "dbname='" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(db) + "'"}
		}
		dsn = withDatabase(dsn, db)
	}
	if dsn == "" {
		return nil
	}
	return []string{"-d", dsn}
}

// tail keeps the last max bytes written to it: a child's stderr.
type tail struct {
	mu  sync.Mutex
	max int
	b   []byte
	log *slog.Logger
	who string
}

func (t *tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if len(t.b) > t.max {
		t.b = append(t.b[:0], t.b[len(t.b)-t.max:]...)
	}
	if t.log != nil {
		for line := range strings.SplitSeq(strings.TrimRight(string(p), "\n"), "\n") {
			if line != "" {
				t.log.Debug("stderr", "program", t.who, "line", line)
			}
		}
	}
	return len(p), nil
}

// String returns the kept bytes, trimmed.
func (t *tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return strings.TrimSpace(string(t.b))
}

// ProcessError is the error of a child process that failed: its command,
// how it ended, and the tail of its stderr.
type ProcessError struct {
	Program string // e.g. "pg_dumpall"
	Err     error  // *exec.ExitError, a start error, or the context's error
	Stderr  string // the last few KiB of its stderr
}

func (e *ProcessError) Error() string {
	s := e.Program + ": " + e.Err.Error()
	if e.Stderr != "" {
		s += ": " + e.Stderr
	}
	return s
}

func (e *ProcessError) Unwrap() error { return e.Err }

// childReader is a child's stdout that reports the child's failure in place
// of EOF: a reader sees io.EOF only after the process exited with status 0.
// The stdout pipe is enlarged to 1 MiB, so that the dump tool keeps
// writing while the reader sleeps between batches.
type childReader struct {
	cmd    *exec.Cmd
	out    *os.File
	short  bool // the last read was short: wait before the next
	stderr *tail
	ctx    context.Context
	once   sync.Once
	err    error
}

// startChild starts cmd with its stdout as the returned reader.
func startChild(ctx context.Context, cmd *exec.Cmd, log *slog.Logger) (*childReader, error) {
	name := filepath.Base(cmd.Path)
	st := &tail{max: 8 << 10, log: log, who: name}
	cmd.Stderr = st
	pr, pw, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	_, _ = unix.FcntlInt(pw.Fd(), unix.F_SETPIPE_SZ, 1<<20) // best effort: the default is 64 KiB
	cmd.Stdout = pw
	err = cmd.Start()
	pw.Close() // the child holds its copy
	if err != nil {
		pr.Close()
		return nil, &ProcessError{Program: name, Err: err}
	}
	return &childReader{cmd: cmd, out: pr, stderr: st, ctx: ctx}, nil
}

func (c *childReader) Read(p []byte) (int, error) {
	if c.short {
		time.Sleep(batchWait)
	}
	n, err := c.out.Read(p)
	c.short = n < min(len(p), batchRead)
	if err == nil {
		return n, nil
	}
	if werr := c.wait(); werr != nil {
		return n, werr
	}
	return n, err
}

// wait reaps the child once and turns a failure into a ProcessError.
func (c *childReader) wait() error {
	c.once.Do(func() {
		err := c.cmd.Wait()
		if cerr := c.ctx.Err(); cerr != nil {
			err = fmt.Errorf("%w (%v)", cerr, err)
		}
		if err != nil {
			c.err = &ProcessError{Program: filepath.Base(c.cmd.Path), Err: err, Stderr: c.stderr.String()}
		}
	})
	return c.err
}

// Close stops the child if it still runs and reaps it.
func (c *childReader) Close() error {
	_ = c.out.Close()
	if c.cmd.ProcessState == nil {
		_ = c.cmd.Process.Signal(syscall.SIGTERM)
	}
	return c.wait()
}

// batchRead and batchWait batch the reads of a child's stdout: after a read
// shorter than batchRead, the next read waits batchWait first. At a dump's
// speed (~200 MB/s) the 1 MiB pipe holds several milliseconds, so the child
// never blocks on the pause, and the reader makes tens instead of thousands
// of reads and wake-ups a second (pg_dump writes 8 KiB at a time).
const (
	batchRead = 256 << 10
	batchWait = time.Millisecond
)

// output runs a short command and returns its trimmed stdout.
func (c Conn) output(ctx context.Context, name string, args ...string) (string, error) {
	cmd := c.command(ctx, name, args...)
	st := &tail{max: 8 << 10}
	cmd.Stderr = st
	out, err := cmd.Output()
	if err != nil {
		return "", &ProcessError{Program: name, Err: err, Stderr: st.String()}
	}
	return strings.TrimSpace(string(out)), nil
}

// ErrNoDatabases is returned when a per-database dump finds nothing to dump.
var ErrNoDatabases = errors.New("pgdump: no databases to dump")
