package pgdump

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"strings"
	"time"

	"github.com/cairn-backup/cairn/blockdiff"
)

// DumpOptions describe one dump.
type DumpOptions struct {
	Conn // the server to dump
	// Mode selects pg_dumpall (the default) or pg_dump -Fc per database.
	Mode Mode
	// Databases limits a per-database dump; empty means every database that
	// accepts connections and is not a template.
	Databases []string
	// Cluster names the cluster in labels; default "postgres".
	Cluster string
	// Volume is the version name; default "pg-" + Cluster. A per-database
	// dump writes Volume+".globals" and Volume+"/"+database.
	Volume string
	// Labels are added to every version.
	Labels map[string]string
	// Args are extra arguments for pg_dumpall or pg_dump (e.g. --no-comments).
	Args []string
	// Logger receives progress messages and, at debug level, the tools'
	// stderr; nil discards them.
	Logger *slog.Logger
	// Progress, when set, is called with the bytes dumped so far by the
	// running tool and its name.
	Progress func(program string, done int64)
}

// ServerInfo is what Dump learns about a server before dumping it.
type ServerInfo struct {
	Version   string   // server_version, e.g. "15.18"
	Databases []string // connectable, non-template databases, sorted
}

// Info connects with psql and returns the server's version and databases.
// It is also how Dump fails early, with psql's message, on a wrong password
// or an unreachable server.
func Info(ctx context.Context, c Conn) (ServerInfo, error) {
	q := "select current_setting('server_version'), datname from pg_database " +
		"where datallowconn and not datistemplate order by datname"
	args := append([]string{"-X", "-q", "-A", "-t", "-F", "\t", "-v", "ON_ERROR_STOP=1", "-c", q}, c.dsnArgs("")...)
	out, err := c.output(ctx, "psql", args...)
	if err != nil {
		return ServerInfo{}, fmt.Errorf("pgdump: connect: %w", err)
	}
	var info ServerInfo
	for line := range strings.SplitSeq(out, "\n") {
		ver, db, ok := strings.Cut(line, "\t")
		if !ok {
			continue
		}
		info.Version = ver
		info.Databases = append(info.Databases, db)
	}
	if info.Version == "" {
		return info, fmt.Errorf("pgdump: connect: psql printed no server version")
	}
	return info, nil
}

// toolVersion returns `name --version`, e.g. "pg_dumpall (PostgreSQL) 15.18".
func (c Conn) toolVersion(ctx context.Context, name string) (string, error) {
	return c.output(ctx, name, "--version")
}

// labelValue fits s into a label value (255 printable bytes).
func labelValue(s string) string {
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, s)
	if len(s) > 255 {
		s = s[:251] + ",..."
	}
	return s
}

// Dump dumps the server into repo and returns the versions it wrote: one for
// ModeDumpAll, the globals and one per database for ModePerDatabase. Each
// tool's stdout streams into blockdiff's BackupStream; a tool that fails
// (exit status, signal, cancelled ctx) makes its version invalid and Dump
// return a *ProcessError (wrapped) with the tail of the tool's stderr. In
// per-database mode a failure stops the run; versions already written stay
// valid and share the LabelRun label.
func Dump(ctx context.Context, repo *blockdiff.Repository, opts DumpOptions) ([]*blockdiff.Version, error) {
	if opts.Mode == "" {
		opts.Mode = ModeDumpAll
	}
	if opts.Mode != ModeDumpAll && opts.Mode != ModePerDatabase {
		return nil, fmt.Errorf("pgdump: mode %q: want %q or %q", opts.Mode, ModeDumpAll, ModePerDatabase)
	}
	if opts.Cluster == "" {
		opts.Cluster = "postgres"
	}
	if opts.Volume == "" {
		opts.Volume = "pg-" + opts.Cluster
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	info, err := Info(ctx, opts.Conn)
	if err != nil {
		return nil, err
	}
	run := make([]byte, 4)
	_, _ = rand.Read(run)
	labels := map[string]string{
		LabelCluster:       labelValue(opts.Cluster),
		LabelServerVersion: labelValue(info.Version),
		LabelRun:           time.Now().UTC().Format("20060102T150405Z") + "-" + hex.EncodeToString(run),
	}
	maps.Copy(labels, opts.Labels)
	log.Info("dump starting", "cluster", opts.Cluster, "server_version", info.Version, "mode", opts.Mode,
		"databases", len(info.Databases), "conn", Redact(opts.DSN))

	if opts.Mode == ModeDumpAll {
		l := maps.Clone(labels)
		l[LabelDatabases] = labelValue(strings.Join(info.Databases, ","))
		l[LabelFormat], l[LabelContent] = FormatPlain, ContentCluster
		v, err := dumpOne(ctx, repo, opts, log, opts.Volume, l, "pg_dumpall", append(opts.dsnArgs(""), opts.Args...))
		if err != nil {
			return nil, err
		}
		return []*blockdiff.Version{v}, nil
	}

	dbs := opts.Databases
	if len(dbs) == 0 {
		dbs = info.Databases
	}
	if len(dbs) == 0 {
		return nil, ErrNoDatabases
	}
	var out []*blockdiff.Version
	l := maps.Clone(labels)
	l[LabelDatabases] = labelValue(strings.Join(info.Databases, ","))
	l[LabelFormat], l[LabelContent] = FormatPlain, ContentGlobals
	v, err := dumpOne(ctx, repo, opts, log, opts.Volume+".globals", l, "pg_dumpall",
		append(opts.dsnArgs(""), "--globals-only"))
	if err != nil {
		return out, err
	}
	out = append(out, v)
	for _, db := range dbs {
		l := maps.Clone(labels)
		l[LabelDatabases] = labelValue(db)
		l[LabelFormat], l[LabelContent] = FormatCustom, ContentDatabase
		// -Z0: an uncompressed archive deduplicates from day to day; the
		// repository compresses. The caller's -Z in opts.Args comes later and wins.
		args := append(append([]string{"-Fc", "-Z0"}, opts.dsnArgs(db)...), opts.Args...)
		v, err := dumpOne(ctx, repo, opts, log, opts.Volume+"/"+db, l, "pg_dump", args)
		if err != nil {
			return out, err
		}
		out = append(out, v)
	}
	return out, nil
}

// dumpOne runs one dump tool and streams its stdout into a stream version.
func dumpOne(ctx context.Context, repo *blockdiff.Repository, opts DumpOptions, log *slog.Logger,
	volume string, labels map[string]string, program string, args []string) (*blockdiff.Version, error) {
	tv, err := opts.toolVersion(ctx, program)
	if err != nil {
		return nil, fmt.Errorf("pgdump: %w", err)
	}
	labels[LabelToolVersion] = labelValue(tv)
	cmd := opts.command(program, args...)
	cmd.Logger, cmd.Batch = log, true
	child, err := cmd.Reader(ctx)
	if err != nil {
		return nil, fmt.Errorf("pgdump: %w", err)
	}
	var progress func(int64)
	if opts.Progress != nil {
		progress = func(d int64) { opts.Progress(program, d) }
	}
	start := time.Now()
	v, err := repo.BackupStream(ctx, child, blockdiff.StreamOptions{Volume: volume, Labels: labels, Progress: progress})
	// Close stops the child if the backup failed on the repository's side.
	werr := child.Close()
	if err != nil {
		var pe *ProcessError
		if !errors.As(err, &pe) && werr != nil && !errors.Is(werr, context.Canceled) {
			err = fmt.Errorf("%w (and %v)", err, werr)
		}
		return nil, fmt.Errorf("pgdump: %s of %s: %w", program, volume, err)
	}
	log.Info("dump stored", "program", program, "volume", volume, "version", v.ID, "bytes", v.Size,
		"new_stored_bytes", v.Stats.BytesWritten, "seconds", time.Since(start).Seconds())
	return v, nil
}
