package repocli

import (
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cairn-backup/cairn/blockdiff"
	"github.com/cairn-backup/cairn/internal/cli"
	"github.com/cairn-backup/cairn/retention"
)

// TestEnforceKeepWithin: --keep-within (Velero's TTL) alone, with RULES (a
// version either keeps stays), and its usage errors; a Mount's Enforce runs
// in place of the repository's.
func TestEnforceKeepWithin(t *testing.T) {
	ctx := context.Background()
	repoDir := filepath.Join(t.TempDir(), "repo")
	var hooked int
	run := func(args ...string) (int, string, string) {
		sio, errb := testIO(nil)
		r := &Repo{}
		r.IO = sio
		root := &cobra.Command{Use: "tool", PersistentPreRunE: func(*cobra.Command, []string) error { return r.Setup() }}
		r.AddFlags(root)
		r.AddCommands(root, Mount{Enforce: func(ctx context.Context, repo *blockdiff.Repository, p retention.Policy, o blockdiff.EnforceOptions) (*blockdiff.EnforceResult, error) {
			hooked++
			return repo.EnforcePolicy(ctx, p, o)
		}})
		root.AddCommand(&cobra.Command{Use: "backup", RunE: func(cmd *cobra.Command, _ []string) error {
			return r.WithRepo(cmd.Context(), func(repo *blockdiff.Repository) error {
				_, err := repo.BackupStream(cmd.Context(), strings.NewReader("x"), blockdiff.StreamOptions{Volume: "k8s/garage"})
				return err
			})
		}})
		code := r.Execute(ctx, root, append([]string{"--repo", repoDir}, args...))
		return code, sio.Out.(interface{ String() string }).String(), errb.String()
	}
	code, _, msg := run("init")
	require.Equal(t, cli.ExitOK, code, msg)
	for range 2 {
		code, _, msg = run("backup")
		require.Equal(t, cli.ExitOK, code, msg)
	}
	removed := func(args ...string) int {
		t.Helper()
		code, out, msg := run(append([]string{"enforce", "--json"}, args...)...)
		require.Equal(t, cli.ExitOK, code, "%v: %s", args, msg)
		var res blockdiff.EnforceResult
		require.NoError(t, json.Unmarshal([]byte(out), &res), out)
		require.Len(t, res.Volumes, 1)
		return len(res.Volumes[0].Removed)
	}
	assert.Equal(t, 0, removed("--keep-within", "720h"))
	assert.Equal(t, 0, removed("--keep-within", "720h", "latest1", "--dry-run"))
	assert.Equal(t, 2, removed("--keep-within", "1ns", "--dry-run"))
	assert.Equal(t, 1, removed("--keep-within", "1ns", "latest1"))
	assert.Equal(t, 4, hooked)
	for _, bad := range [][]string{{"enforce"}, {"enforce", "--keep-within", "-1h"}, {"enforce", "latest1", "days2", "--keep-within", "1h"}} {
		code, _, msg = run(bad...)
		assert.Equal(t, cli.ExitUsage, code, "%v: %s", bad, msg)
	}
}
