package repocli

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cairn-backup/cairn/blockdiff"
	"github.com/cairn-backup/cairn/internal/cli"
	"github.com/cairn-backup/cairn/objstore"
)

func testIO(env map[string]string) (cli.IO, *bytes.Buffer) {
	var errb bytes.Buffer
	return cli.IO{In: strings.NewReader(""), Out: &bytes.Buffer{}, Err: &errb, Getenv: func(k string) string { return env[k] }}, &errb
}

// TestRepositoryExitCodes: no repository, a wrong or missing passphrase
// and a held lock each have their exit code, so a script can tell them apart.
func TestRepositoryExitCodes(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	repoDir := filepath.Join(dir, "repo")
	run := func(env map[string]string, args ...string) (int, string) {
		sio, errb := testIO(env)
		r := &Repo{}
		r.IO = sio
		root := &cobra.Command{Use: "tool", PersistentPreRunE: func(*cobra.Command, []string) error { return r.Setup() }}
		r.AddFlags(root)
		r.AddCommands(root, Mount{})
		root.AddCommand(&cobra.Command{Use: "backup", RunE: func(cmd *cobra.Command, _ []string) error {
			return r.WithRepo(cmd.Context(), func(repo *blockdiff.Repository) error {
				_, err := repo.BackupStream(cmd.Context(), strings.NewReader("x"), blockdiff.StreamOptions{Volume: "v"})
				return err
			})
		}})
		return r.Execute(ctx, root, args), errb.String()
	}
	code, msg := run(nil, "--repo", repoDir, "ls")
	assert.Equal(t, cli.ExitNoRepository, code, msg)
	code, msg = run(map[string]string{"CAIRN_PASSWORD": "right"}, "--repo", repoDir, "init", "--encrypt")
	require.Equal(t, cli.ExitOK, code, msg)
	code, msg = run(map[string]string{"CAIRN_PASSWORD": "wrong"}, "--repo", repoDir, "ls")
	assert.Equal(t, cli.ExitWrongPassphrase, code, msg)
	code, msg = run(nil, "--repo", repoDir, "ls")
	assert.Equal(t, cli.ExitWrongPassphrase, code, msg)

	// A cleanup holds the exclusive lock: a backup that may not wait is refused.
	s, err := objstore.Open(ctx, "file://"+repoDir)
	require.NoError(t, err)
	defer s.Close()
	repo, err := blockdiff.Open(ctx, s, blockdiff.Options{Passphrase: []byte("right")})
	require.NoError(t, err)
	defer repo.Close()
	lock, err := repo.Lock(ctx, blockdiff.LockExclusive, "cleanup")
	require.NoError(t, err)
	defer lock.Release(ctx)
	code, msg = run(map[string]string{"CAIRN_PASSWORD": "right"}, "--repo", repoDir, "--lock-wait", "0s", "backup")
	assert.Equal(t, cli.ExitLocked, code, msg)

	for _, bad := range [][]string{{"--lock-ttl", "0s", "ls"}, {"--lock-ttl", "-1s", "ls"}, {"--lock-wait", "-1s", "ls"},
		{"cleanup", "--grace", "-1s"}, {"enforce", "latest0"}, {"enforce", "--grace", "-1h", "latest7"}} {
		code, msg = run(map[string]string{"CAIRN_PASSWORD": "right"}, append([]string{"--repo", repoDir}, bad...)...)
		assert.Equal(t, cli.ExitUsage, code, "%v: %s", bad, msg)
	}
}

func TestPassphraseAndStore(t *testing.T) {
	dir := t.TempDir()
	pwFile := filepath.Join(dir, "pw")
	require.NoError(t, os.WriteFile(pwFile, []byte("from-file\n"), 0o600))
	sio, _ := testIO(map[string]string{"CAIRN_PASSWORD": "from-env", "CAIRN_REPO": filepath.Join(dir, "repo")})

	r := &Repo{}
	r.IO = sio
	pw, err := r.Passphrase()
	require.NoError(t, err)
	assert.Equal(t, "from-env", string(pw))
	r.PasswordFile = pwFile
	pw, err = r.Passphrase()
	require.NoError(t, err)
	assert.Equal(t, "from-file", string(pw), "the file wins and loses its newline")
	r.PasswordFile = filepath.Join(dir, "missing")
	_, err = r.Passphrase()
	assert.ErrorContains(t, err, "password file")

	s, err := r.Store(context.Background()) // a bare path from $CAIRN_REPO is a folder
	require.NoError(t, err)
	require.NoError(t, s.Close())
	assert.DirExists(t, filepath.Join(dir, "repo"))

	t.Chdir(dir) // and so is a relative one
	r.URL = "rel/repo"
	s, err = r.Store(context.Background())
	require.NoError(t, err)
	require.NoError(t, s.Close())
	assert.DirExists(t, filepath.Join(dir, "rel", "repo"))

	empty, _ := testIO(nil)
	er := &Repo{}
	er.IO = empty
	_, err = er.Store(context.Background())
	var ue cli.UsageError
	assert.ErrorAs(t, err, &ue, "no repository is a usage error")
}

// TestNoLockFlag: a restore holds a shared lock (a file under locks/ while it
// runs) unless --no-lock is given.
func TestNoLockFlag(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "repo")
	for _, args := range [][]string{{"--repo", dir}, {"--repo", dir, "--no-lock"}} {
		sio, _ := testIO(nil)
		r := &Repo{}
		r.IO = sio
		root := &cobra.Command{Use: "tool", RunE: func(*cobra.Command, []string) error { return nil }}
		r.AddFlags(root)
		root.SetArgs(args)
		require.NoError(t, root.Execute())
		require.NoError(t, r.Setup())
		if _, err := os.Stat(dir); err != nil {
			require.NoError(t, r.Init(ctx, blockdiff.InitConfig{}, false))
		}
		locks := -1
		err := r.WithRepo(ctx, func(repo *blockdiff.Repository) error {
			v, err := repo.BackupStream(ctx, strings.NewReader("some dump"), blockdiff.StreamOptions{Volume: "v"})
			if err != nil {
				return err
			}
			return repo.RestoreStream(ctx, v.ID, io.Discard, blockdiff.StreamRestoreOptions{Progress: func(int64, int64) {
				ents, _ := os.ReadDir(filepath.Join(dir, "locks"))
				locks = len(ents)
			}})
		})
		require.NoError(t, err)
		want := 1
		if r.Options.NoReadLock {
			want = 0
		}
		assert.Equal(t, want, locks, "locks during a restore with %v", args)
	}
}

func TestParseLabels(t *testing.T) {
	m, err := ParseLabels([]string{"pvc=data", "ns=garage"})
	require.NoError(t, err)
	assert.Equal(t, map[string]string{"pvc": "data", "ns": "garage"}, m)
	_, err = ParseLabels([]string{"novalue"})
	assert.ErrorContains(t, err, `label "novalue": want key=value`)
}
