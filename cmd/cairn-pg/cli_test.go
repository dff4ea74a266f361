package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cairn-backup/cairn/internal/cli"
	"github.com/cairn-backup/cairn/internal/repocli"
	"github.com/cairn-backup/cairn/internal/testenv"
)

// runCLI runs a command line with env as the environment.
func runCLI(t *testing.T, env map[string]string, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(context.Background(), args, cli.IO{In: strings.NewReader(""), Out: &out, Err: &errb,
		Getenv: func(k string) string { return env[k] }})
	return code, out.String(), errb.String()
}

func TestUsageErrors(t *testing.T) {
	for _, a := range [][]string{
		{"dump"}, // no repository
		{"dump", "--repo", "mem://x", "--mode", "x"}, // bad mode
		{"restore", "--repo", "mem://x"},             // no version
		{"ls", "--bogus"},
		{"frobnicate"},
	} {
		if code, _, errOut := runCLI(t, nil, a...); code != cli.ExitUsage {
			t.Errorf("%v: exit %d, want 2 (%s)", a, code, errOut)
		}
	}
}

func TestDumpLsRestore(t *testing.T) {
	pg := testenv.Postgres(t)
	env := map[string]string{"CAIRN_REPO": t.TempDir(), "CAIRN_PG_DSN": pg.DSN, "PG_BINDIR": pg.BinDir, "CAIRN_PASSWORD": "pw"}
	if code, _, e := runCLI(t, env, "init", "--encrypt"); code != cli.ExitOK {
		t.Fatalf("init: %d %s", code, e)
	}
	prom := filepath.Join(t.TempDir(), "postgres-backup.prom")
	code, out, e := runCLI(t, env, "dump", "--cluster", "main", "--json", "--metrics-file", prom, "--", "--schema-only")
	if code != cli.ExitOK {
		t.Fatalf("dump: %d %s", code, e)
	}
	if strings.Contains(e, pg.DSN) || strings.Contains(e, os.Getenv("PGPASSWORD")) {
		t.Fatalf("the log shows the DSN or password: %s", e)
	}
	var vs []repocli.VersionJSON
	if err := json.Unmarshal([]byte(out), &vs); err != nil || len(vs) != 1 || vs[0].Labels["pg.cluster"] != "main" {
		t.Fatalf("dump --json: %v %s", err, out)
	}
	metrics := func() string {
		b, err := os.ReadFile(prom)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	stored := fmt.Sprintf(`cairn_backup_stored_bytes{run="postgres-backup",volume=%q} %d`, vs[0].Volume, vs[0].Stats.BytesWritten)
	if m := metrics(); !strings.Contains(m, stored) || !strings.Contains(m, `cairn_last_run_success{binary="cairn-pg",command="dump",run="postgres-backup"} 1`) {
		t.Fatalf("metrics file after a dump lacks %s:\n%s", stored, m)
	}
	code, out, _ = runCLI(t, env, "ls", "--cluster", "main", "--json")
	var ls []repocli.VersionJSON
	if code != cli.ExitOK || json.Unmarshal([]byte(out), &ls) != nil || len(ls) != 1 || ls[0].ID != vs[0].ID || ls[0].Status != "valid" {
		t.Fatalf("ls: %d %s", code, out)
	}
	code, out, e = runCLI(t, env, "restore", vs[0].ID)
	if code != cli.ExitOK || int64(len(out)) != vs[0].Size || !strings.Contains(out, "PostgreSQL database cluster dump") {
		t.Fatalf("restore to stdout: %d, %d bytes of %d: %s", code, len(out), vs[0].Size, e)
	}
	// A wrong password: failure (1), psql's message, no new version.
	bad := map[string]string{}
	for k, v := range env {
		bad[k] = v
	}
	bad["CAIRN_PG_DSN"] = strings.Replace(pg.DSN, "@", "x@", 1)
	code, _, e = runCLI(t, bad, "dump", "--metrics-file", prom)
	if code != cli.ExitFailure || !strings.Contains(e, "password authentication failed") {
		t.Fatalf("wrong password: %d %s", code, e)
	}
	if m := metrics(); !strings.Contains(m, `cairn_last_run_success{binary="cairn-pg",command="dump",run="postgres-backup"} 0`) ||
		!strings.Contains(m, "cairn_last_success_timestamp_seconds{") {
		t.Fatalf("metrics file after a failed dump:\n%s", m)
	}
	_, out, _ = runCLI(t, env, "ls", "--json")
	if err := json.Unmarshal([]byte(out), &ls); err != nil || len(ls) != 1 {
		t.Fatalf("after a failed dump: %s", out)
	}
}

func TestVerifyFlag(t *testing.T) {
	pg := testenv.Postgres(t)
	env := map[string]string{"CAIRN_REPO": t.TempDir(), "CAIRN_PG_DSN": pg.DSN, "PG_BINDIR": pg.BinDir}
	if code, _, e := runCLI(t, env, "init"); code != cli.ExitOK {
		t.Fatalf("init: %s", e)
	}
	code, out, e := runCLI(t, env, "dump", "--json", "--", "--schema-only")
	var vs []repocli.VersionJSON
	if code != cli.ExitOK || json.Unmarshal([]byte(out), &vs) != nil || len(vs) != 1 {
		t.Fatalf("dump: %d %s %s", code, out, e)
	}
	delete(env, "CAIRN_PG_DSN")
	code, out, e = runCLI(t, env, "restore", vs[0].ID, "--verify", "--superuser", "cairn", "--json")
	var rep reportJSON
	if code != cli.ExitOK || json.Unmarshal([]byte(out), &rep) != nil || rep.Program != "psql" || rep.Error != "" {
		t.Fatalf("restore --verify: %d %s %s", code, out, e)
	}
}

// TestExitCodes: cairn-pg exits as cairn-block does: 10 without a
// repository, 12 with a wrong passphrase, 2 for a bad rule, and has a version
// command.
func TestExitCodes(t *testing.T) {
	dir := t.TempDir()
	env := map[string]string{"CAIRN_REPO": dir + "/repo"}
	if code, _, e := runCLI(t, env, "ls"); code != cli.ExitNoRepository {
		t.Errorf("ls without a repository: exit %d: %s", code, e)
	}
	env["CAIRN_PASSWORD"] = "right"
	if code, _, e := runCLI(t, env, "init", "--encrypt"); code != cli.ExitOK {
		t.Fatal(e)
	}
	env["CAIRN_PASSWORD"] = "wrong"
	if code, _, e := runCLI(t, env, "ls"); code != cli.ExitWrongPassphrase {
		t.Errorf("wrong passphrase: exit %d: %s", code, e)
	}
	env["CAIRN_PASSWORD"] = "right"
	if code, _, e := runCLI(t, env, "enforce", "latest7,dayz3"); code != cli.ExitUsage || !strings.Contains(e, "dayz3") {
		t.Errorf("bad rule: exit %d: %s", code, e)
	}
	if code, out, _ := runCLI(t, env, "version"); code != cli.ExitOK || !strings.HasPrefix(out, "cairn-pg ") {
		t.Errorf("version: %d %q", code, out)
	}
	if code, out, _ := runCLI(t, env, "--help"); code != cli.ExitOK || !strings.Contains(out, "12   wrong passphrase") {
		t.Errorf("--help lacks the exit codes: %s", out)
	}
}
