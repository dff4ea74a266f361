package pgdump

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/blockdiff"
	"github.com/cairn-backup/cairn/internal/testenv"
	"github.com/cairn-backup/cairn/objstore"
)

// benchDB is the pgbench database the big tests share; scale 22 gives a
// pg_dumpall of about 214 MB. It is kept between runs (made again only when
// its scale marker is missing), since pgbench -i takes a while here.
const (
	benchDB    = "cairn_pgdump_bench"
	benchScale = 22
)

var (
	benchOnce sync.Once
	benchErr  error
)

// pg returns the test server, or skips (fails under CI=true).
func pg(t testing.TB) testenv.PostgresEnv {
	t.Helper()
	return testenv.Postgres(t)
}

// psql runs a statement on database db of the test server.
func psql(t testing.TB, env testenv.PostgresEnv, db, sql string) string {
	t.Helper()
	c := Conn{DSN: env.DSN, BinDir: env.BinDir}
	out, err := c.output(context.Background(), "psql", append([]string{"-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql}, c.dsnArgs(db)...)...)
	if err != nil {
		t.Fatalf("psql %q: %v", sql, err)
	}
	return out
}

// bigDB makes the pgbench database once per process (and per server).
func bigDB(t testing.TB) testenv.PostgresEnv {
	t.Helper()
	env := pg(t)
	benchOnce.Do(func() {
		c := Conn{DSN: env.DSN, BinDir: env.BinDir}
		ctx := context.Background()
		marker := fmt.Sprintf("pgbench scale %d", benchScale)
		out, _ := c.output(ctx, "psql", append([]string{"-X", "-A", "-t", "-c",
			"select shobj_description(oid, 'pg_database') from pg_database where datname = '" + benchDB + "'"}, c.dsnArgs("")...)...)
		if out == marker {
			return
		}
		start := time.Now()
		if _, benchErr = c.output(ctx, "psql", append([]string{"-X", "-q", "-c", "DROP DATABASE IF EXISTS " + benchDB + " WITH (FORCE)"}, c.dsnArgs("")...)...); benchErr != nil {
			return
		}
		if _, benchErr = c.output(ctx, "psql", append([]string{"-X", "-q", "-c", "CREATE DATABASE " + benchDB}, c.dsnArgs("")...)...); benchErr != nil {
			return
		}
		if _, benchErr = c.output(ctx, "pgbench", append([]string{"-i", "-q", "-s", fmt.Sprint(benchScale)}, c.dsnArgs(benchDB)...)...); benchErr != nil {
			return
		}
		_, benchErr = c.output(ctx, "psql", append([]string{"-X", "-q", "-c", "COMMENT ON DATABASE " + benchDB + " IS '" + marker + "'"}, c.dsnArgs("")...)...)
		t.Logf("pgbench -i -s %d in %s", benchScale, time.Since(start).Round(time.Millisecond))
	})
	if benchErr != nil {
		t.Fatalf("make the pgbench database: %v", benchErr)
	}
	return env
}

// newRepo makes a repository in a fresh directory (file:// is what a
// CronJob's local test would use; the store does not matter to pgdump).
func newRepo(t testing.TB) *blockdiff.Repository {
	t.Helper()
	s, err := objstore.Open(context.Background(), "file://"+t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	r, err := blockdiff.Init(context.Background(), s, blockdiff.InitConfig{}, blockdiff.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// noValid fails when repo holds a valid version.
func noValid(t testing.TB, r *blockdiff.Repository) {
	t.Helper()
	vs, err := r.List(context.Background(), blockdiff.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range vs {
		if v.Status == blockdiff.StatusValid {
			t.Fatalf("valid version %s left behind: %+v", v.ID, v)
		}
	}
}

// freshCluster starts a throwaway PostgreSQL instance with scripts/pg.sh and
// returns a connection over its Unix socket (trusted, so a restored role
// password does not lock the test out).
func freshCluster(t testing.TB, env testenv.PostgresEnv) Conn {
	t.Helper()
	dir, err := os.MkdirTemp("/dev/shm", "cairn-pgdump-")
	if err != nil {
		dir = t.TempDir()
	}
	_ = os.Remove(dir) // pg.sh wants to create it
	script, _ := filepath.Abs("../scripts/pg.sh")
	cmd := exec.Command(script, "start", dir)
	cmd.Env = append(os.Environ(), "PG_BINDIR="+env.BinDir)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("pg.sh start: %v\n%s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command(script, "stop", dir).CombinedOutput(); err != nil {
			t.Logf("pg.sh stop: %v\n%s", err, out)
		}
	})
	envFile, err := os.ReadFile(filepath.Join(dir, "env"))
	if err != nil {
		t.Fatal(err)
	}
	var port string
	for line := range strings.SplitSeq(string(envFile), "\n") {
		if p, ok := strings.CutPrefix(line, "export PGPORT="); ok {
			port = p
		}
	}
	return Conn{DSN: fmt.Sprintf("host=%s port=%s user=cairn dbname=postgres sslmode=disable", dir, port), BinDir: env.BinDir}
}

// dumpall returns a digest of pg_dumpall's output for c and its line count,
// without the \restrict and \unrestrict lines, whose key is random in every
// dump (PostgreSQL 15.14+). With keep, the filtered output is also written
// to a file under /tmp whose name it returns, to look at a difference.
func dumpall(t testing.TB, c Conn, keep bool) (sum [32]byte, lines int, file string) {
	t.Helper()
	out, err := c.command("pg_dumpall", c.dsnArgs("")...).Reader(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	h := sha256.New()
	var w io.Writer = h
	if keep {
		f, err := os.CreateTemp("", "cairn-pgdump-diff-*.sql")
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		file = f.Name()
		w = io.MultiWriter(h, f)
	}
	br := bufio.NewReaderSize(out, 1<<20)
	for {
		line, err := br.ReadSlice('\n')
		if len(line) > 0 && !bytes.HasPrefix(line, []byte(`\restrict `)) && !bytes.HasPrefix(line, []byte(`\unrestrict `)) {
			_, _ = w.Write(line)
			lines++
		}
		if err == io.EOF {
			break
		}
		if err != nil && err != bufio.ErrBufferFull {
			t.Fatal(err) // pg_dumpall's failure, with its stderr
		}
	}
	h.Sum(sum[:0])
	return sum, lines, file
}

// The scenario: dump a ≥ 200 MB cluster, change 1% of the rows,
// dump again (≤ 10% new stored bytes), restore into a fresh cluster and
// compare pg_dumpall of both.
func TestDumpChangeRestore(t *testing.T) {
	env := bigDB(t)
	ctx := context.Background()
	r := newRepo(t)
	conn := Conn{DSN: env.DSN, BinDir: env.BinDir}
	opts := DumpOptions{Conn: conn, Cluster: "test", Labels: map[string]string{"ns": "postgres"}}

	// The table in key order, as pgbench -i leaves it, whatever earlier runs
	// changed: the 1% update below then touches rows all over the dump.
	psql(t, env, benchDB, "CLUSTER pgbench_accounts USING pgbench_accounts_pkey")
	v1s, err := Dump(ctx, r, opts)
	if err != nil {
		t.Fatal(err)
	}
	v1 := v1s[0]
	if v1.Size < 200e6 {
		t.Fatalf("dump is %d bytes, want >= 200 MB (raise benchScale)", v1.Size)
	}
	for _, k := range []string{LabelCluster, LabelServerVersion, LabelDatabases, LabelToolVersion, LabelFormat, "ns"} {
		if v1.Labels[k] == "" {
			t.Errorf("label %s missing: %v", k, v1.Labels)
		}
	}
	if !strings.Contains(v1.Labels[LabelDatabases], benchDB) || !strings.HasPrefix(v1.Labels[LabelServerVersion], "15") {
		t.Errorf("labels %v", v1.Labels)
	}

	// Day 2: 1% of the accounts (a range of keys, as hot or recent rows
	// cluster in real databases) change. The new row versions move to the end
	// of the table, so the dump loses a run of rows in the middle and gains
	// one at the end.
	rows := benchScale * 100000 / 100
	psql(t, env, benchDB, fmt.Sprintf("UPDATE pgbench_accounts SET abalance = abalance + 7 WHERE aid > %d AND aid <= %d", rows*40, rows*41))
	v2 := dumpAgain(t, r, opts, v1, "a 1% range of rows changed")
	if frac := float64(v2.Stats.BytesWritten) / float64(v2.Size); frac > 0.10 {
		t.Fatalf("second dump stored %.1f%% of its size, want <= 10%%", 100*frac)
	}
	if frac := newPlain(v1, v2) / float64(v2.Size); frac > 0.10 {
		t.Fatalf("%.1f%% of the second dump is in new chunks, want <= 10%%", 100*frac)
	}

	// Restore into a fresh cluster; both clusters dump the same.
	want, wantLines, _ := dumpall(t, conn, false)
	fresh := freshCluster(t, env)
	rep, err := Restore(ctx, r, v2.ID, RestoreOptions{Conn: fresh})
	if err != nil {
		t.Fatalf("restore: %v (report %+v)", err, rep)
	}
	if len(rep.Errors) != rep.Benign {
		t.Fatalf("restore reported errors: %q", rep.Errors)
	}
	got, gotLines, _ := dumpall(t, fresh, false)
	if got != want {
		_, _, a := dumpall(t, conn, true)
		_, _, b := dumpall(t, fresh, true)
		t.Fatalf("pg_dumpall of the restored cluster (%d lines) differs from the source's (%d lines): diff %s %s",
			gotLines, wantLines, a, b)
	}

	// To stdout: the same bytes as the dump.
	var n countWriter
	if err := WriteTo(ctx, r, v2.ID, &n); err != nil || int64(n) != v2.Size {
		t.Fatalf("WriteTo wrote %d of %d bytes: %v", n, v2.Size, err)
	}

	// Day 3: 1% of the accounts, spread evenly (every 100th key). Every
	// 1 MiB of the dump then holds changed rows, so no chunking of a
	// practical size deduplicates it; zstd still keeps the stored bytes small
	// (pgbench's filler is blanks). Reported, and the bound checked.
	psql(t, env, benchDB, "UPDATE pgbench_accounts SET abalance = abalance + 7 WHERE aid % 100 = 42")
	v3 := dumpAgain(t, r, opts, v2, "1% of rows changed, spread evenly")
	if frac := float64(v3.Stats.BytesWritten) / float64(v3.Size); frac > 0.10 {
		t.Fatalf("third dump stored %.1f%% of its size, want <= 10%%", 100*frac)
	}
}

// dumpAgain dumps with opts and logs what it stored against base.
func dumpAgain(t testing.TB, r *blockdiff.Repository, opts DumpOptions, base *blockdiff.Version, what string) *blockdiff.Version {
	t.Helper()
	vs, err := Dump(context.Background(), r, opts)
	if err != nil {
		t.Fatal(err)
	}
	v := vs[0]
	t.Logf("%s: %d bytes dumped in %.1fs, %d new stored bytes (%.2f%% of the dump), %.2f%% of the dump in new chunks (%d of %d)",
		what, v.Size, v.Stats.DurationSeconds, v.Stats.BytesWritten, 100*float64(v.Stats.BytesWritten)/float64(v.Size),
		100*newPlain(base, v)/float64(v.Size), v.Stats.BlocksNew, v.Stats.BlocksTotal)
	return v
}

// newPlain is the number of bytes of v in chunks that base does not have.
func newPlain(base, v *blockdiff.Version) float64 {
	old := map[blockdiff.ID]bool{}
	for _, ref := range base.Refs() {
		old[ref.ID] = true
	}
	var n int64
	for _, ref := range v.Refs() {
		if !old[ref.ID] {
			n += ref.Length
		}
	}
	return float64(n)
}

type countWriter int64

func (c *countWriter) Write(p []byte) (int, error) { *c += countWriter(len(p)); return len(p), nil }

// A dump whose server connection is killed midway fails with pg_dump's
// message and leaves no valid version.
func TestDumpServerGoesAway(t *testing.T) {
	env := bigDB(t)
	r := newRepo(t)
	var killed atomic.Bool
	opts := DumpOptions{Conn: Conn{DSN: env.DSN, BinDir: env.BinDir}, Cluster: "test",
		Progress: func(_ string, done int64) {
			if done > 20<<20 && killed.CompareAndSwap(false, true) {
				go func() {
					c := Conn{DSN: env.DSN, BinDir: env.BinDir}
					if _, err := c.output(context.Background(), "psql", append([]string{"-X", "-c",
						"SELECT pg_terminate_backend(pid) FROM pg_stat_activity " +
							"WHERE application_name IN ('pg_dump', 'pg_dumpall') AND pid <> pg_backend_pid()"}, c.dsnArgs("")...)...); err != nil {
						t.Errorf("terminate: %v", err)
					}
				}()
			}
		}}
	_, err := Dump(context.Background(), r, opts)
	if err == nil {
		t.Fatal("dump succeeded although its connection was terminated")
	}
	var pe *ProcessError
	if !errors.As(err, &pe) || !strings.Contains(err.Error(), "terminat") {
		t.Fatalf("err = %v, want a ProcessError with the server's message", err)
	}
	t.Logf("error: %v", err)
	noValid(t, r)
}

func TestDumpWrongPassword(t *testing.T) {
	env := pg(t)
	r := newRepo(t)
	dsn, _ := splitPassword(env.DSN)
	dsn = strings.Replace(dsn, "cairn@", "cairn:not-the-password@", 1)
	_, err := Dump(context.Background(), r, DumpOptions{Conn: Conn{DSN: dsn, BinDir: env.BinDir}})
	if err == nil || !strings.Contains(err.Error(), "password authentication failed") {
		t.Fatalf("err = %v, want psql's password authentication failure", err)
	}
	if strings.Contains(err.Error(), "not-the-password") {
		t.Fatalf("the error shows the password: %v", err)
	}
	noValid(t, r)
}

func TestDumpMissingTool(t *testing.T) {
	env := pg(t)
	r := newRepo(t)
	bin := t.TempDir() // psql only: pg_dumpall is missing
	if err := os.Symlink(env.Bin("psql"), filepath.Join(bin, "psql")); err != nil {
		t.Fatal(err)
	}
	_, err := Dump(context.Background(), r, DumpOptions{Conn: Conn{DSN: env.DSN, BinDir: bin}})
	if err == nil || !strings.Contains(err.Error(), "pg_dumpall") || !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("err = %v, want pg_dumpall not found", err)
	}
	noValid(t, r)
}

// A cancelled context stops the child and leaves no valid version.
func TestDumpCancel(t *testing.T) {
	env := bigDB(t)
	r := newRepo(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	_, err := Dump(ctx, r, DumpOptions{Conn: Conn{DSN: env.DSN, BinDir: env.BinDir},
		Progress: func(_ string, done int64) {
			if done > 10<<20 {
				cancel()
			}
		}})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	noValid(t, r)
}

// Per-database mode: globals plus pg_dump -Fc of one database, verified by a
// load into a scratch database.
func TestDumpPerDatabaseVerify(t *testing.T) {
	env := pg(t)
	ctx := context.Background()
	db := "cairn_pgdump_small"
	psql(t, env, "postgres", "DROP DATABASE IF EXISTS "+db+" WITH (FORCE)")
	psql(t, env, "postgres", "CREATE DATABASE "+db)
	defer psql(t, env, "postgres", "DROP DATABASE IF EXISTS "+db+" WITH (FORCE)")
	psql(t, env, db, "CREATE TABLE t AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 20000) g")
	r := newRepo(t)
	conn := Conn{DSN: env.DSN, BinDir: env.BinDir}
	vs, err := Dump(ctx, r, DumpOptions{Conn: conn, Mode: ModePerDatabase, Databases: []string{db}, Cluster: "test"})
	if err != nil {
		t.Fatal(err)
	}
	if len(vs) != 2 || vs[0].Labels[LabelContent] != ContentGlobals || vs[1].Labels[LabelFormat] != FormatCustom ||
		vs[1].Volume != "pg-test/"+db || vs[0].Labels[LabelRun] != vs[1].Labels[LabelRun] {
		t.Fatalf("versions: %+v / %+v", vs[0], vs[1])
	}
	rep, err := Verify(ctx, r, vs[1].ID, VerifyOptions{Conn: conn})
	if err != nil {
		t.Fatalf("verify: %v (%+v)", err, rep)
	}
	// Into an existing database, strictly: pg_restore's count comes back.
	target := db + "_restored"
	psql(t, env, "postgres", "DROP DATABASE IF EXISTS "+target+" WITH (FORCE)")
	psql(t, env, "postgres", "CREATE DATABASE "+target)
	defer psql(t, env, "postgres", "DROP DATABASE IF EXISTS "+target+" WITH (FORCE)")
	if _, err := Restore(ctx, r, vs[1].ID, RestoreOptions{Conn: conn, Database: target, Strict: true}); err != nil {
		t.Fatal(err)
	}
	if got := psql(t, env, target, "SELECT count(*), sum(id) FROM t"); got != "20000|200010000" {
		t.Fatalf("restored table: %s", got)
	}
	// A second strict load into the same database fails: the table exists.
	if _, err := Restore(ctx, r, vs[1].ID, RestoreOptions{Conn: conn, Database: target, Strict: true}); err == nil ||
		!strings.Contains(err.Error(), "already exists") {
		t.Fatalf("strict restore over existing objects: %v", err)
	}
}

// TestDumpPerDatabaseDedups: per-database archives are uncompressed
// (-Z0), so the next day's dump of a database with 99 changed rows stores a
// small part of it anew (compressed archives change throughout). The archive
// is ~17 MB: chunks average 1 MiB, and the change touches a few of them.
func TestDumpPerDatabaseDedups(t *testing.T) {
	env := pg(t)
	ctx := context.Background()
	db := "cairn_pgdump_dedup"
	psql(t, env, "postgres", "DROP DATABASE IF EXISTS "+db+" WITH (FORCE)")
	psql(t, env, "postgres", "CREATE DATABASE "+db)
	defer psql(t, env, "postgres", "DROP DATABASE IF EXISTS "+db+" WITH (FORCE)")
	psql(t, env, db, "CREATE TABLE t AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 400000) g")
	r := newRepo(t)
	opts := DumpOptions{Conn: Conn{DSN: env.DSN, BinDir: env.BinDir}, Mode: ModePerDatabase, Databases: []string{db}, Cluster: "dedup"}
	if _, err := Dump(ctx, r, opts); err != nil {
		t.Fatal(err)
	}
	psql(t, env, db, "UPDATE t SET v = 'changed' WHERE id BETWEEN 200000 AND 200098")
	vs, err := Dump(ctx, r, opts)
	if err != nil {
		t.Fatal(err)
	}
	day2 := vs[1]
	t.Logf("day 2: %d new bytes of a %d-byte archive (%.1f%%)", day2.Stats.BytesWritten, day2.Size, 100*float64(day2.Stats.BytesWritten)/float64(day2.Size))
	if day2.Size < 12<<20 || day2.Stats.BytesWritten*4 > day2.Size {
		t.Fatalf("day 2 stored %d new bytes of a %d-byte archive: it does not deduplicate", day2.Stats.BytesWritten, day2.Size)
	}
	// pg_dump's own -Z after -- still wins: a compressed archive.
	opts.Args = []string{"-Z6"}
	vs, err = Dump(ctx, r, opts)
	if err != nil {
		t.Fatal(err)
	}
	if vs[1].Size*2 > day2.Size {
		t.Fatalf("-Z6 after --: archive of %d bytes, uncompressed %d", vs[1].Size, day2.Size)
	}
}

func TestSplitPassword(t *testing.T) {
	for _, tc := range []struct{ in, rest, pass string }{
		{"postgres://u:s3cret@h:5432/db?sslmode=disable", "postgres://u@h:5432/db?sslmode=disable", "s3cret"},
		{"postgresql://u@h/db?password=p%40ss&sslmode=require", "postgresql://u@h/db?sslmode=require", "p@ss"},
		{"host=h user=u password=secret dbname=d", "host=h user=u dbname=d", "secret"},
		{"host=h password='it''s' dbname=d", "host=h password='it''s' dbname=d", ""}, // not libpq quoting: left alone
		{`password='a b\'c' host=h`, "host=h", "a b'c"},
		{"host=h", "host=h", ""},
		{"", "", ""},
	} {
		rest, pass := splitPassword(tc.in)
		if tc.pass == "" && tc.in == tc.rest {
			if pass != "" && !strings.Contains(tc.in, "''") {
				t.Errorf("%q: found password %q", tc.in, pass)
			}
			continue
		}
		if rest != tc.rest || pass != tc.pass {
			t.Errorf("splitPassword(%q) = %q, %q; want %q, %q", tc.in, rest, pass, tc.rest, tc.pass)
		}
		if strings.Contains(Redact(tc.in), tc.pass) {
			t.Errorf("Redact(%q) = %q shows the password", tc.in, Redact(tc.in))
		}
	}
	if got := withDatabase("postgres://u@h:1/postgres?sslmode=disable", "x y"); got != "postgres://u@h:1/x%20y?sslmode=disable" {
		t.Errorf("withDatabase URI: %s", got)
	}
	if got := withDatabase("host=h dbname=a", "it's"); got != `host=h dbname=a dbname='it\'s'` {
		t.Errorf("withDatabase kv: %s", got)
	}
}

// The child's stdout reports its failure instead of EOF.
func TestChildReaderReportsFailure(t *testing.T) {
	c := Conn{}
	cr, err := c.command("sh", "-c", "echo partial; echo 'pg_dump: error: boom' >&2; exit 3").Reader(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(cr)
	var pe *ProcessError
	if string(b) != "partial\n" || !errors.As(err, &pe) || !strings.Contains(err.Error(), "boom") || !strings.Contains(err.Error(), "exit status 3") {
		t.Fatalf("read %q, err %v", b, err)
	}
}

// Verify of a cluster dump starts a scratch cluster of its own; a dump that
// does not load fails verification with psql's message.
func TestVerifyClusterDump(t *testing.T) {
	env := pg(t)
	ctx := context.Background()
	r := newRepo(t)
	vs, err := Dump(ctx, r, DumpOptions{Conn: Conn{DSN: env.DSN, BinDir: env.BinDir}, Args: []string{"--schema-only"}})
	if err != nil {
		t.Fatal(err)
	}
	// A folder of this test's own for the scratch clusters: the check
	// below must not see those of other tests or test processes. It is
	// world-searchable, since a root test runs the cluster as postgres.
	tmp, err := os.MkdirTemp("", "cairn-pg-verify-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(tmp) })
	if err := os.Chmod(tmp, 0o755); err != nil {
		t.Fatal(err)
	}
	vo := VerifyOptions{Conn: Conn{BinDir: env.BinDir}, Superuser: "cairn", TempDir: tmp}
	rep, err := Verify(ctx, r, vs[0].ID, vo)
	if err != nil {
		t.Fatalf("verify: %v (%+v)", err, rep)
	}
	if rep.Benign == 0 {
		t.Errorf("expected the benign 'role exists' error, report %+v", rep)
	}
	bad, err := r.BackupStream(ctx, strings.NewReader("CREATE TABLE broken (;\n"), blockdiff.StreamOptions{
		Volume: "bad", Labels: map[string]string{LabelFormat: FormatPlain}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Verify(ctx, r, bad.ID, vo); err == nil || !strings.Contains(err.Error(), "syntax error") {
		t.Fatalf("verify of a broken dump: %v", err)
	}
	left, _ := filepath.Glob(filepath.Join(tmp, "cairn-pg-scratch-*"))
	if len(left) > 0 {
		t.Fatalf("scratch clusters left behind: %v", left)
	}
}
