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
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/cairn-backup/cairn/internal/proc"
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

// command describes a child process of program name with the connection's
// environment; the password of the DSN goes into PGPASSWORD. It runs as
// every child of cairn runs (internal/proc): on cancellation SIGTERM first
// (the tools exit cleanly), SIGKILL after proc.Grace; errors carry the tail
// of its stderr.
func (c Conn) command(name string, args ...string) *proc.Cmd {
	env := append(os.Environ(), c.Env...)
	if _, pass := splitPassword(c.DSN); pass != "" {
		env = append(env, "PGPASSWORD="+pass)
	}
	return &proc.Cmd{Path: c.bin(name), Args: args, Env: env, Program: name}
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

// ProcessError is the error of a child process that failed: its program,
// how it ended (an *exec.ExitError, a start error, or the context's error
// when a cancellation stopped it), and the last proc.TailSize bytes of its
// stderr.
type ProcessError = proc.Error

// output runs a short command and returns its trimmed stdout.
func (c Conn) output(ctx context.Context, name string, args ...string) (string, error) {
	out, err := c.command(name, args...).Output(ctx, nil)
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(out)), nil
}

// ErrNoDatabases is returned when a per-database dump finds nothing to dump.
var ErrNoDatabases = errors.New("pgdump: no databases to dump")
