//go:build !ceph

package main

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cairn-backup/cairn/internal/cli"
)

// TestNoCeph: without the ceph tag, --volumes data says how to rebuild
// before it touches the cluster or the repository.
func TestNoCeph(t *testing.T) {
	var out, errb bytes.Buffer
	env := map[string]string{"CAIRN_REPO": filepath.Join(t.TempDir(), "repo")}
	code := run(context.Background(), []string{"backup", "--namespace", "garage", "--volumes", "data"},
		cli.IO{In: strings.NewReader(""), Out: &out, Err: &errb, Getenv: func(k string) string { return env[k] }})
	if code != 1 || !strings.Contains(errb.String(), "rebuild with -tags 'ceph pacific'") {
		t.Errorf("backup --volumes data without Ceph: exit %d, %s", code, errb.String())
	}
}
