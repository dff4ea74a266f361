package main

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/cairn-backup/cairn/blockdiff"
	"github.com/cairn-backup/cairn/internal/cli"
	"github.com/cairn-backup/cairn/internal/repocli"
	"github.com/cairn-backup/cairn/objstore"
)

// enforce and cleanup work on stream versions (made here without a server).
func TestEnforceCleanup(t *testing.T) {
	dir := t.TempDir()
	env := map[string]string{"CAIRN_REPO": dir}
	if code, _, e := runCLI(t, env, "init"); code != cli.ExitOK {
		t.Fatal(e)
	}
	ctx := t.Context()
	s, err := objstore.Open(ctx, "file://"+dir)
	if err != nil {
		t.Fatal(err)
	}
	r, err := blockdiff.Open(ctx, s, blockdiff.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if _, err := r.BackupStream(ctx, strings.NewReader(strings.Repeat("row\n", 100000*(i+1))), blockdiff.StreamOptions{
			Volume: "pg-main", Labels: map[string]string{"pg.cluster": "main"}}); err != nil {
			t.Fatal(err)
		}
	}
	r.Close()
	s.Close()
	code, out, e := runCLI(t, env, "enforce", "latest1", "--cluster", "main", "--json")
	var res blockdiff.EnforceResult
	if code != cli.ExitOK || json.Unmarshal([]byte(out), &res) != nil || len(res.Volumes) != 1 || len(res.Volumes[0].Removed) != 2 {
		t.Fatalf("enforce: %d %s %s", code, out, e)
	}
	code, out, e = runCLI(t, env, "cleanup", "--grace", "0", "--json")
	var cr blockdiff.CleanupResult
	if code != cli.ExitOK || json.Unmarshal([]byte(out), &cr) != nil || cr.Deleted == 0 {
		t.Fatalf("cleanup: %d %s %s", code, out, e)
	}
	code, out, _ = runCLI(t, env, "ls", "--json")
	var vs []repocli.VersionJSON
	if code != cli.ExitOK || json.Unmarshal([]byte(out), &vs) != nil || len(vs) != 1 {
		t.Fatalf("ls after enforce: %s", out)
	}
	if code, _, e := runCLI(t, env, "restore", vs[0].ID, "--to", t.TempDir()+"/out.sql"); code != cli.ExitOK {
		t.Fatalf("restore after cleanup: %s", e)
	}
}
