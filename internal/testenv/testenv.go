// Package testenv gives integration tests the addresses of the real servers
// that scripts/testenv starts (radosgw S3, Ceph, PostgreSQL, kube-apiserver,
// the OpenZFS VM).
//
// `scripts/testenv up` writes an env file of `export NAME=value` lines. Tests
// read the variables from the process environment; when they are unset, the
// env file named by CAIRN_TESTENV_FILE (default /tmp/cairn-testenv/env) is
// loaded, so `go test ./...` works after `scripts/testenv up` without sourcing
// anything. A test whose server is absent is skipped with a message saying how
// to start it, except under CI=true, where an absent server fails the test:
// CI must never pass by skipping.
package testenv

import (
	"bufio"
	"os"
	"strings"
	"sync"
	"testing"
)

// DefaultFile is where `scripts/testenv up` writes the env file unless
// CAIRN_TESTENV_FILE says otherwise.
const DefaultFile = "/tmp/cairn-testenv/env"

var loadOnce sync.Once

// load sets, from the env file, every variable that is not already set.
func load() {
	loadOnce.Do(func() {
		name := os.Getenv("CAIRN_TESTENV_FILE")
		if name == "" {
			name = DefaultFile
		}
		f, err := os.Open(name)
		if err != nil {
			return
		}
		defer f.Close()
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			line := strings.TrimSpace(sc.Text())
			line = strings.TrimPrefix(line, "export ")
			k, v, ok := strings.Cut(line, "=")
			if !ok || strings.HasPrefix(k, "#") {
				continue
			}
			v = strings.Trim(v, `'"`)
			if _, set := os.LookupEnv(k); !set {
				os.Setenv(k, v)
			}
		}
	})
}

// Get returns the variable name after loading the env file, or "".
func Get(name string) string {
	load()
	return os.Getenv(name)
}

// Require returns the values of the named variables, or ends the test: skipped
// with a hint when any is unset, failed instead under CI=true.
func Require(t testing.TB, server string, names ...string) []string {
	t.Helper()
	vals := make([]string, len(names))
	var missing []string
	for i, n := range names {
		vals[i] = Get(n)
		if vals[i] == "" {
			missing = append(missing, n)
		}
	}
	if len(missing) > 0 {
		msg := server + " is not available (" + strings.Join(missing, ", ") +
			" unset): start it with `scripts/testenv up`, or run `make test`"
		if os.Getenv("CI") == "true" {
			t.Fatal(msg + " [CI=true: an absent server is a failure]")
		}
		t.Skip(msg)
	}
	return vals
}

// S3Env is the radosgw S3 endpoint of the test environment. The credentials
// are also in the process environment (AWS_ACCESS_KEY_ID, ...) where the SDK's
// default chain finds them.
type S3Env struct {
	Endpoint  string // http://127.0.0.1:PORT
	Region    string
	AccessKey string
	SecretKey string
}

// S3 returns the S3 server of the test environment, or skips/fails the test.
func S3(t testing.TB) S3Env {
	t.Helper()
	v := Require(t, "S3 (radosgw)", "S3_ENDPOINT", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION")
	return S3Env{Endpoint: v[0], AccessKey: v[1], SecretKey: v[2], Region: v[3]}
}

// CephEnv is the Ceph cluster of the test environment, for RBD and RADOS tests
// (go-ceph, build tags `ceph pacific`). librados reads CEPH_CONF, which names
// the client.admin keyring, so rados.Conn.ReadDefaultConfigFile finds it.
type CephEnv struct {
	Conf string // path of ceph.conf
	Pool string // an RBD pool (application rbd), also usable for RADOS objects
}

// Ceph returns the Ceph cluster of the test environment, or skips/fails the
// test.
func Ceph(t testing.TB) CephEnv {
	t.Helper()
	v := Require(t, "Ceph", "CEPH_CONF", "CEPH_POOL")
	return CephEnv{Conf: v[0], Pool: v[1]}
}

// PostgresEnv is the PostgreSQL 15 instance of the test environment. The
// libpq variables (PGHOST, PGPORT, PGUSER, PGPASSWORD, PGDATABASE, PGSSLMODE)
// are also in the process environment, where psql, pg_dumpall and pgbench
// find them.
type PostgresEnv struct {
	DSN    string // postgres://cairn:PASSWORD@127.0.0.1:PORT/postgres?sslmode=disable
	BinDir string // the server's bin directory: psql, pg_dump, pg_dumpall, pgbench, initdb
}

// Bin returns the path of the PostgreSQL program name in BinDir.
func (p PostgresEnv) Bin(name string) string { return p.BinDir + "/" + name }

// Postgres returns the PostgreSQL instance of the test environment, or
// skips/fails the test.
func Postgres(t testing.TB) PostgresEnv {
	t.Helper()
	v := Require(t, "PostgreSQL", "PG_DSN", "PG_BINDIR")
	return PostgresEnv{DSN: v[0], BinDir: v[1]}
}
