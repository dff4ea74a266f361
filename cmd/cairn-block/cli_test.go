package main

import (
	"bytes"
	"context"
	"encoding/json"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/cairn-backup/cairn/internal/cli"
	"github.com/cairn-backup/cairn/internal/repocli"
	"github.com/cairn-backup/cairn/objstore"
)

// tcli runs cairn-block in-process with the given environment.
type tcli struct {
	t   *testing.T
	env map[string]string
}

func newCLI(t *testing.T) *tcli {
	return &tcli{t: t, env: map[string]string{"CAIRN_REPO": "mem://" + strings.ReplaceAll(t.Name(), "/", "_")}}
}

// run returns the exit code, stdout and stderr of one command line.
func (c *tcli) run(stdin string, args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	code := run(context.Background(), args, cli.IO{In: strings.NewReader(stdin), Out: &out, Err: &errb,
		Getenv: func(k string) string { return c.env[k] }})
	return code, out.String(), errb.String()
}

// ok runs a command that must succeed and returns its stdout.
func (c *tcli) ok(args ...string) string {
	c.t.Helper()
	code, out, errs := c.run("", args...)
	if code != 0 {
		c.t.Fatalf("%v: exit %d\n%s", args, code, errs)
	}
	return out
}

func image(t *testing.T, n int, seed uint64) (string, []byte) {
	b := make([]byte, n)
	r := rand.NewChaCha8([32]byte{byte(seed)})
	_, _ = r.Read(b)
	copy(b[n/2:], make([]byte, n/4)) // a zero stretch
	p := filepath.Join(t.TempDir(), "img")
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p, b
}

func TestCLIBackupRestoreJSON(t *testing.T) {
	c := newCLI(t)
	c.ok("init", "--block-size", "64K")
	src, img := image(t, 1<<20+5, 1)
	var res repocli.VersionJSON
	out := c.ok("backup", "--json", "--label", "pvc=db", "file://"+src, "vol")
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("backup --json: %v\n%s", err, out)
	}
	// backup --json is a version as ls --json shows it: statistics under "stats"
	var raw map[string]any
	if err := json.Unmarshal([]byte(out), &raw); err != nil || raw["stats"] == nil || raw["bytes_read"] != nil {
		t.Errorf("backup --json does not nest its statistics under stats: %s", out)
	}
	if res.ID == "" || res.Volume != "vol" || res.Size != int64(len(img)) || res.Stats.BlocksTotal != 17 ||
		res.Stats.BlocksSparse != 3 || res.Stats.BytesRead == 0 || res.Stats.BlocksNew == 0 || res.Labels["pvc"] != "db" {
		t.Errorf("backup --json: %s", out)
	}
	id := res.ID

	dest := filepath.Join(t.TempDir(), "restored")
	c.ok("restore", id, dest)
	if got, _ := os.ReadFile(dest); !bytes.Equal(got, img) {
		t.Fatal("restored image differs")
	}
	if code, _, _ := c.run("", "restore", id, dest); code != 1 {
		t.Fatalf("restore over an existing file without --force: exit %d", code)
	}
	c.ok("restore", "--force", "--sparse", id, "file://"+dest)

	var ls []map[string]any
	if err := json.Unmarshal([]byte(c.ok("ls", "--json", "--volume", "vol", "--label", "pvc=db")), &ls); err != nil {
		t.Fatal(err)
	}
	if len(ls) != 1 {
		t.Fatalf("ls --json: %v", ls)
	}
	for _, k := range []string{"id", "volume", "created", "size", "status", "protected", "labels"} {
		if _, ok := ls[0][k]; !ok {
			t.Errorf("ls --json lacks %q", k)
		}
	}
	if ls[0]["status"] != "valid" || ls[0]["labels"].(map[string]any)["pvc"] != "db" || ls[0]["id"] != id {
		t.Errorf("ls --json: %v", ls[0])
	}
	if out := c.ok("ls", "--json", "--volume", "other"); strings.TrimSpace(out) != "[]" {
		t.Errorf("ls of no versions: %q", out)
	}
}

func TestCLIDifferentialFromStdinHints(t *testing.T) {
	c := newCLI(t)
	c.ok("init", "--block-size", "64K")
	src, img := image(t, 40*65536, 2)
	base := strings.TrimSpace(c.ok("backup", src, "vol"))
	copy(img[3*65536:], "changed")
	if err := os.WriteFile(src, img, 0o600); err != nil {
		t.Fatal(err)
	}
	hints := `[{"offset":196608,"length":7,"exists":"true"}]`
	code, out, errs := c.run(hints, "backup", "--json", "--base", base, "--hints", "-", src, "vol")
	if code != 0 {
		t.Fatalf("differential: %d %s", code, errs)
	}
	var res repocli.VersionJSON
	_ = json.Unmarshal([]byte(out), &res)
	if res.Stats.BlocksNew != 1 || res.Stats.BlocksVerified != 10 {
		t.Fatalf("differential: %s", out)
	}
}

func TestCLIProtectLabelRemove(t *testing.T) {
	c := newCLI(t)
	c.ok("init", "--block-size", "64K")
	src, _ := image(t, 1000, 3)
	id := strings.TrimSpace(c.ok("backup", src, "vol"))
	c.ok("protect", id)
	if code, _, errs := c.run("", "rm", "--force", id); code != 1 || !strings.Contains(errs, "protected") {
		t.Fatalf("rm of a protected version: exit %d %s", code, errs)
	}
	c.ok("unprotect", id)
	if code, _, errs := c.run("", "rm", id); code != 1 || !strings.Contains(errs, "younger") {
		t.Fatalf("rm of a young version: exit %d %s", code, errs)
	}
	c.ok("label", id, "a=1", "b=2")
	c.ok("label", id, "a-")
	out := c.ok("ls")
	if !strings.Contains(out, "b=2") || strings.Contains(out, "a=1") || !strings.Contains(out, id) {
		t.Fatalf("ls after label:\n%s", out)
	}
	c.ok("rm", "--min-age", "0s", id)
	if out := c.ok("ls", "--json"); strings.TrimSpace(out) != "[]" {
		t.Fatalf("after rm: %s", out)
	}
}

func TestCLIEncrypted(t *testing.T) {
	c := newCLI(t)
	pwFile := filepath.Join(t.TempDir(), "pw")
	if err := os.WriteFile(pwFile, []byte("hunter2\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, _, _ := c.run("", "init", "--encrypt"); code != 2 {
		t.Fatalf("init --encrypt without a passphrase: exit %d", code)
	}
	c.ok("init", "--encrypt", "--password-file", pwFile, "--block-size", "64K")
	src, _ := image(t, 5000, 4)
	if code, _, errs := c.run("", "backup", src, "vol"); code != cli.ExitWrongPassphrase || !strings.Contains(errs, "passphrase") {
		t.Fatalf("backup without passphrase: %d %s", code, errs)
	}
	c.env["CAIRN_PASSWORD"] = "wrong"
	if code, _, errs := c.run("", "ls"); code != cli.ExitWrongPassphrase || !strings.Contains(errs, "wrong passphrase") {
		t.Fatalf("wrong passphrase: %d %s", code, errs)
	}
	c.env["CAIRN_PASSWORD"] = "hunter2"
	id := strings.TrimSpace(c.ok("backup", src, "vol"))
	code, _, errs := c.run("", "ls")
	if code != 0 || strings.Contains(errs, "hunter2") {
		t.Fatalf("ls: %d, or the passphrase was logged: %s", code, errs)
	}
	_, _, errs = c.run("", "--log-level", "debug", "restore", id, filepath.Join(t.TempDir(), "x"))
	if strings.Contains(errs, "hunter2") {
		t.Fatal("the passphrase was logged")
	}
}

func TestCLIUsageErrors(t *testing.T) {
	c := newCLI(t)
	cases := [][]string{
		{"backup"},
		{"backup", "a"},
		{"restore", "x"},
		{"ls", "--bogus"},
		{"frobnicate"},
		{"rm"},
		{"label", "v"},
		{"label", "v", "novalue"},
		{"init", "--block-size", "lots"},
		{"init", "--block-size", "3K"},
		{"backup", "--block-size", "100000", "src", "vol"},
		{"--log-level", "loud", "ls"},
		{"backup", "--hints", "-", "src", "vol"},
		{"backup", "--verify-hints", "200", "--base", "b", "src", "vol"},
	}
	for _, args := range cases {
		if code, _, errs := c.run("", args...); code != 2 {
			t.Errorf("%v: exit %d, want 2 (%s)", args, code, errs)
		}
	}
	delete(c.env, "CAIRN_REPO")
	if code, _, _ := c.run("", "ls"); code != 2 {
		t.Errorf("no repository: exit %d, want 2", code)
	}
	if code, _, _ := c.run("", "--repo", "mem://"+t.Name()+"-none", "ls"); code != cli.ExitNoRepository {
		t.Errorf("not a repository: exit %d, want %d", code, cli.ExitNoRepository)
	}
	if code, _, _ := c.run("", "--help"); code != 0 {
		t.Errorf("--help: exit %d", code)
	}
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{"4M": 4 << 20, "4MiB": 4 << 20, "64K": 64 << 10, "65536": 65536, "1G": 1 << 30, "0": 0} {
		if got, err := repocli.ParseSize(in); err != nil || got != want {
			t.Errorf("repocli.ParseSize(%q) = %d, %v", in, got, err)
		}
	}
	for _, bad := range []string{"", "x", "-1", "4T"} {
		if _, err := repocli.ParseSize(bad); err == nil {
			t.Errorf("repocli.ParseSize(%q) accepted", bad)
		}
	}
}

func TestS3SchemeRegistered(t *testing.T) {
	if !slices.Contains(objstore.Schemes(), "s3") {
		t.Fatalf("s3:// is not registered: %v", objstore.Schemes())
	}
}
