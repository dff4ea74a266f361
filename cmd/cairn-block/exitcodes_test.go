package main

import (
	"bytes"
	"context"
	"encoding/json"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/blockdiff"
	"github.com/cairn-backup/cairn/internal/cli"
	"github.com/cairn-backup/cairn/internal/repocli"
	"github.com/cairn-backup/cairn/objstore"
)

// TestExitCodes: a script can tell no repository, a held lock, a wrong
// passphrase and an interrupted run apart by the exit code alone.
func TestExitCodes(t *testing.T) {
	dir := t.TempDir()
	c := &tcli{t: t, env: map[string]string{"CAIRN_REPO": filepath.Join(dir, "repo")}}
	src, _ := image(t, 1<<20, 3)
	if code, _, errs := c.run("", "ls"); code != cli.ExitNoRepository || !strings.Contains(errs, "no repository here") {
		t.Fatalf("ls of no repository: exit %d: %s", code, errs)
	}
	c.env["CAIRN_PASSWORD"] = "right"
	c.ok("init", "--encrypt")
	c.env["CAIRN_PASSWORD"] = "wrong"
	if code, _, _ := c.run("", "backup", src, "vol"); code != cli.ExitWrongPassphrase {
		t.Errorf("wrong passphrase: exit %d", code)
	}
	c.env["CAIRN_PASSWORD"] = "right"

	ctx := context.Background()
	s, err := objstore.Open(ctx, "file://"+filepath.Join(dir, "repo"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	r, err := blockdiff.Open(ctx, s, blockdiff.Options{Passphrase: []byte("right")})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	lock, err := r.Lock(ctx, blockdiff.LockExclusive, "cleanup")
	if err != nil {
		t.Fatal(err)
	}
	if code, _, errs := c.run("", "--lock-wait", "0", "backup", src, "vol"); code != cli.ExitLocked || !strings.Contains(errs, "locked") {
		t.Errorf("locked: exit %d: %s", code, errs)
	}
	lock.Release(ctx)

	// SIGTERM mid-backup: exit 130, and the version says it failed.
	big := filepath.Join(dir, "big.img")
	data := make([]byte, 1<<20)
	_, _ = rand.NewChaCha8([32]byte{9}).Read(data)
	f, err := os.Create(big)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 256 {
		data[0], data[1] = byte(i), byte(i>>8) // distinct blocks: all hashed and stored
		if _, err := f.Write(data); err != nil {
			t.Fatal(err)
		}
	}
	f.Close()
	cctx, cancel := context.WithCancel(ctx)
	versions := func() (n int) { // manifests, not the temporary files of one being written
		ents, _ := os.ReadDir(filepath.Join(dir, "repo", "versions"))
		for _, e := range ents {
			if !strings.HasPrefix(e.Name(), ".") {
				n++
			}
		}
		return n
	}
	before := versions()
	go func() { // SIGTERM once the backup has started (its manifest exists)
		for versions() == before && cctx.Err() == nil {
			time.Sleep(5 * time.Millisecond)
		}
		cancel()
	}()
	var out, errb bytes.Buffer
	code := run(cctx, []string{"backup", big, "big"}, cli.IO{In: strings.NewReader(""), Out: &out, Err: &errb, Getenv: func(k string) string { return c.env[k] }})
	if code != cli.ExitInterrupted || !strings.Contains(errb.String(), "interrupted") {
		t.Fatalf("interrupted backup: exit %d: %s", code, errb.String())
	}
	var vs []repocli.VersionJSON
	if err := json.Unmarshal([]byte(c.ok("ls", "--json", "--volume", "big")), &vs); err != nil || len(vs) != 1 {
		t.Fatalf("ls: %v %+v", err, vs)
	}
	if vs[0].Status != string(blockdiff.StatusFailed) || vs[0].Error == "" {
		t.Errorf("interrupted version: %+v", vs[0])
	}
	if code, out, _ := c.run("", "version"); code != cli.ExitOK || !strings.HasPrefix(out, "cairn-block ") {
		t.Errorf("version: %d %q", code, out)
	}
}

// TestProgressInCronJobLog: with stderr a log (no terminal), a backup logs
// progress lines with bytes, total, rate and ETA every --progress-interval.
func TestProgressInCronJobLog(t *testing.T) {
	c := newCLI(t)
	c.ok("init", "--block-size", "64K")
	src, _ := image(t, 16<<20, 5)
	code, _, errs := c.run("", "--progress-interval", "1ms", "backup", src, "vol")
	if code != 0 {
		t.Fatal(errs)
	}
	var lines []string
	for _, l := range strings.Split(errs, "\n") {
		if strings.Contains(l, "msg=progress") {
			lines = append(lines, l)
		}
	}
	if len(lines) == 0 {
		t.Fatalf("no progress lines in the log:\n%s", errs)
	}
	for _, l := range lines { // every line: nothing is reported before the first figures
		for _, want := range []string{`op="backup vol"`, "done=", `total="16.0 MiB"`, "rate="} {
			if !strings.Contains(l, want) {
				t.Errorf("progress line lacks %s: %s", want, l)
			}
		}
	}
	// --json: the same as JSON status lines on stderr, stdout stays the result
	code, out, errs := c.run("", "--json", "--progress-interval", "1ms", "backup", src, "vol")
	if code != 0 {
		t.Fatal(errs)
	}
	var v repocli.VersionJSON
	if err := json.Unmarshal([]byte(out), &v); err != nil || v.Volume != "vol" {
		t.Fatalf("stdout is not the version: %v %s", err, out)
	}
	if !strings.Contains(errs, `"message_type":"status"`) || !strings.Contains(errs, `"total_bytes":16777216`) {
		t.Errorf("no JSON status lines on stderr:\n%s", errs)
	}
}
