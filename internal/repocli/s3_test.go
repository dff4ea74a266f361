package repocli

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"

	"github.com/cairn-backup/cairn/internal/cli"
	"github.com/cairn-backup/cairn/internal/testenv"
	_ "github.com/cairn-backup/cairn/objstore/s3"
)

// TestInitCreateBucket, on the real S3 server: init on a missing bucket says
// so (and creates nothing); init --create-bucket creates it and the
// repository, which then lists.
func TestInitCreateBucket(t *testing.T) {
	env := testenv.S3(t)
	bucket := fmt.Sprintf("cairn-init-%d", time.Now().UnixNano())
	url := fmt.Sprintf("s3://%s/repo?endpoint=%s&region=%s&path_style=true", bucket, env.Endpoint, env.Region)
	run := func(args ...string) (int, string) {
		sio, errb := testIO(nil)
		r := &Repo{}
		r.IO = sio
		root := &cobra.Command{Use: "tool", PersistentPreRunE: func(*cobra.Command, []string) error { return r.Setup() }}
		r.AddFlags(root)
		r.AddCommands(root, Mount{})
		return r.Execute(t.Context(), root, append([]string{"--repo", url}, args...)), errb.String()
	}
	code, msg := run("init")
	if code != cli.ExitFailure || !strings.Contains(msg, fmt.Sprintf("bucket %q does not exist", bucket)) ||
		!strings.Contains(msg, "--create-bucket") {
		t.Fatalf("init on a missing bucket: exit %d: %s", code, msg)
	}
	if code, msg = run("init", "--create-bucket"); code != cli.ExitOK {
		t.Fatalf("init --create-bucket: exit %d: %s", code, msg)
	}
	if code, msg = run("ls"); code != cli.ExitOK {
		t.Fatalf("ls: exit %d: %s", code, msg)
	}
	if code, msg = run("init", "--create-bucket"); code != cli.ExitFailure || !strings.Contains(msg, "already exists") {
		t.Fatalf("second init: exit %d: %s", code, msg)
	}
}
