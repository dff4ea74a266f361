package cli

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cairn-backup/cairn/blockdiff"
	"github.com/spf13/cobra"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func testIO(env map[string]string) (IO, *bytes.Buffer) {
	var errb bytes.Buffer
	return IO{In: strings.NewReader(""), Out: &bytes.Buffer{}, Err: &errb, Getenv: func(k string) string { return env[k] }}, &errb
}

func TestExecuteExitCodes(t *testing.T) {
	newRoot := func() *cobra.Command {
		root := &cobra.Command{Use: "tool"}
		root.AddCommand(&cobra.Command{Use: "ok", Args: Args(cobra.NoArgs), RunE: func(*cobra.Command, []string) error { return nil }})
		root.AddCommand(&cobra.Command{Use: "fail", RunE: func(*cobra.Command, []string) error { return errors.New("disk on fire") }})
		root.AddCommand(&cobra.Command{Use: "bad", RunE: func(*cobra.Command, []string) error { return Usagef("--x %q: want a number", "y") }})
		return root
	}
	cases := []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"ok"}, ExitOK, ""},
		{[]string{"fail"}, ExitFailure, "tool: disk on fire"},
		{[]string{"bad"}, ExitUsage, `tool: --x "y": want a number`},
		{[]string{"ok", "extra"}, ExitUsage, "Run 'tool --help' for usage."},
		{[]string{"ok", "--nope"}, ExitUsage, "unknown flag: --nope"},
		{[]string{"nope"}, ExitUsage, `unknown command "nope"`},
	}
	for _, c := range cases {
		sio, errb := testIO(nil)
		assert.Equal(t, c.code, (&Repo{IO: sio}).Execute(context.Background(), newRoot(), c.args), "%v", c.args)
		assert.Contains(t, errb.String(), c.msg, "%v", c.args)
	}
}

func TestPassphraseAndStore(t *testing.T) {
	dir := t.TempDir()
	pwFile := filepath.Join(dir, "pw")
	require.NoError(t, os.WriteFile(pwFile, []byte("from-file\n"), 0o600))
	sio, _ := testIO(map[string]string{"CAIRN_PASSWORD": "from-env", "CAIRN_REPO": filepath.Join(dir, "repo")})

	r := &Repo{IO: sio}
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
	_, err = (&Repo{IO: empty}).Store(context.Background())
	var ue UsageError
	assert.ErrorAs(t, err, &ue, "no repository is a usage error")
}

// TestNoLockFlag: a restore holds a shared lock (a file under locks/ while it
// runs) unless --no-lock is given.
func TestNoLockFlag(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "repo")
	for _, args := range [][]string{{"--repo", dir}, {"--repo", dir, "--no-lock"}} {
		sio, _ := testIO(nil)
		r := &Repo{IO: sio}
		root := &cobra.Command{Use: "tool", RunE: func(*cobra.Command, []string) error { return nil }}
		r.AddFlags(root, "log level")
		root.SetArgs(args)
		require.NoError(t, root.Execute())
		require.NoError(t, r.Setup())
		if _, err := os.Stat(dir); err != nil {
			require.NoError(t, r.Init(ctx, blockdiff.InitConfig{}))
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

func TestParseLabelsAndHumanBytes(t *testing.T) {
	m, err := ParseLabels([]string{"pvc=data", "ns=garage"})
	require.NoError(t, err)
	assert.Equal(t, map[string]string{"pvc": "data", "ns": "garage"}, m)
	_, err = ParseLabels([]string{"novalue"})
	assert.ErrorContains(t, err, `label "novalue": want key=value`)
	assert.Equal(t, "512 B", HumanBytes(512))
	assert.Equal(t, "4.0 MiB", HumanBytes(4<<20))
}

func TestProgress(t *testing.T) {
	var buf bytes.Buffer
	p := NewProgress(&buf, "backup vm-1")
	p.Bytes(512<<20, 1<<30)
	p.Bytes(256<<20, 1<<30) // a late report from another goroutine
	if l := p.line(); !strings.HasPrefix(l, "backup vm-1 [===============               ]  50% 512.0 MiB / 1.0 GiB") {
		t.Errorf("line = %q", l)
	}
	p.Update("pg_dump", 3<<20, 0)
	if l := p.line(); !strings.HasPrefix(l, "backup vm-1 pg_dump 3.0 MiB  ") {
		t.Errorf("line = %q", l)
	}
	p.Finish()
	if buf.Len() != 0 {
		t.Errorf("drew on a buffer, not a terminal: %q", buf.String())
	}
}
