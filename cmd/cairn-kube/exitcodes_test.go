package main

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/cairn-backup/cairn/internal/cli"
)

// TestExitCodes: the exit codes every cairn binary shares, without a
// cluster: --help lists them, no repository is 10, a wrong passphrase 12, a
// usage error 2; version works.
func TestExitCodes(t *testing.T) {
	dir := t.TempDir()
	env := map[string]string{"CAIRN_REPO": filepath.Join(dir, "repo")}
	runIt := func(args ...string) (int, string, string) {
		var out, errb bytes.Buffer
		code := run(context.Background(), args, cli.IO{In: strings.NewReader(""), Out: &out, Err: &errb,
			Getenv: func(k string) string { return env[k] }})
		return code, out.String(), errb.String()
	}
	code, out, _ := runIt("--help")
	assert.Equal(t, cli.ExitOK, code)
	assert.Contains(t, out, "Exit codes:")
	assert.Contains(t, out, "130  interrupted")
	for _, c := range []string{"backup", "restore", "ls", "enforce", "cleanup"} {
		assert.Contains(t, out, "\n  "+c+" ", "--help lists %s", c)
	}
	code, _, errs := runIt("ls")
	assert.Equal(t, cli.ExitNoRepository, code, errs)
	env["CAIRN_PASSWORD"] = "right"
	code, _, errs = runIt("init", "--encrypt")
	assert.Equal(t, cli.ExitOK, code, errs)
	env["CAIRN_PASSWORD"] = "wrong"
	code, _, errs = runIt("ls")
	assert.Equal(t, cli.ExitWrongPassphrase, code, errs)
	code, _, _ = runIt("frobnicate")
	assert.Equal(t, cli.ExitUsage, code)
	code, _, _ = runIt("enforce", "--keep-within", "soon")
	assert.Equal(t, cli.ExitUsage, code)
	code, out, _ = runIt("version")
	assert.Equal(t, cli.ExitOK, code)
	assert.Contains(t, out, "cairn-kube")
}
