package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/internal/cli"
	"github.com/cairn-backup/cairn/objstore"
)

// TestCLIRefusesNonVolumeSources is issue 19, case 2 at the command line: a
// directory (it panicked), a FIFO (it hung in open, deaf to SIGTERM) and a
// character device (/dev/zero made a valid 0-byte version) are refused,
// naming the path and its type, and no version exists afterwards.
func TestCLIRefusesNonVolumeSources(t *testing.T) {
	c := newCLI(t)
	c.ok("init", "--block-size", "64K")
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	for path, kind := range map[string]string{dir: "directory", fifo: "FIFO", "/dev/zero": "character device"} {
		done := make(chan struct{})
		var code int
		var errs string
		go func() {
			defer close(done)
			code, _, errs = c.run("", "backup", path, "vol")
		}()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Fatalf("backup of %s hangs", path)
		}
		if code == 0 || !strings.Contains(errs, path) || !strings.Contains(errs, kind) {
			t.Errorf("backup of %s: exit %d\n%s", path, code, errs)
		}
	}
	if out := c.ok("ls", "--json"); strings.TrimSpace(out) != "[]" {
		t.Fatalf("versions exist after refused backups: %s", out)
	}
}

// TestCLIRmNegativeMinAge: rm --min-age -1h is a usage error (exit 2).
func TestCLIRmNegativeMinAge(t *testing.T) {
	c := newCLI(t)
	c.ok("init", "--block-size", "64K")
	if code, _, errs := c.run("", "rm", "--min-age", "-1h", "20260101T000000Z-00000000"); code != 2 {
		t.Fatalf("rm --min-age -1h: exit %d\n%s", code, errs)
	}
}

// TestCLIDamagedManifest is issue 19, case 3 at the command line: ls shows
// a damaged version and the others, scrub --all reports it, rm removes it.
func TestCLIDamagedManifest(t *testing.T) {
	c := newCLI(t)
	c.ok("init", "--block-size", "64K")
	src, _ := image(t, 300<<10, 3)
	good := strings.TrimSpace(c.ok("backup", src, "vol"))
	bad := strings.TrimSpace(c.ok("backup", src, "vol"))
	s, err := objstore.Open(context.Background(), c.env["CAIRN_REPO"])
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	body := bytes.Repeat([]byte{0x5a}, 100)
	if err := s.Put(context.Background(), "versions/"+bad, bytes.NewReader(body), int64(len(body))); err != nil {
		t.Fatal(err)
	}
	out := c.ok("ls")
	if !strings.Contains(out, good) || !strings.Contains(out, bad) || !strings.Contains(out, "damaged") {
		t.Fatalf("ls with a damaged manifest:\n%s", out)
	}
	code, out, errs := c.run("", "scrub", "--all")
	if code != 1 || !strings.Contains(out+errs, bad) {
		t.Fatalf("scrub --all: exit %d\n%s\n%s", code, out, errs)
	}
	c.ok("rm", "--force", bad)
	if out := c.ok("ls"); strings.Contains(out, bad) || !strings.Contains(out, good) {
		t.Fatalf("ls after rm:\n%s", out)
	}
	c.ok("scrub", "--all")
	_ = os.Remove(src)
}

// TestCLIRepairIndex: with a damaged index segment, backup still works,
// scrub reports the segment, and repair index rebuilds the index (issue 19,
// case 3).
func TestCLIRepairIndex(t *testing.T) {
	c := newCLI(t)
	c.ok("init", "--block-size", "64K")
	src, _ := image(t, 300<<10, 4)
	c.ok("backup", src, "vol")
	s, err := objstore.Open(context.Background(), c.env["CAIRN_REPO"])
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var seg string
	for info, err := range s.List(context.Background(), "index/") {
		if err != nil {
			t.Fatal(err)
		}
		seg = info.Key
	}
	body := []byte("not an index segment")
	if err := s.Put(context.Background(), seg, bytes.NewReader(body), int64(len(body))); err != nil {
		t.Fatal(err)
	}
	c.ok("backup", src, "vol") // the damaged segment only costs dedup
	if code, out, errs := c.run("", "scrub", "--all"); code != 1 || !strings.Contains(out, "damaged index segments") {
		t.Fatalf("scrub --all: exit %d\n%s\n%s", code, out, errs)
	}
	out := c.ok("repair", "index")
	if !strings.Contains(out, "index rebuilt") || !strings.Contains(out, "1 damaged") {
		t.Fatalf("repair index: %s", out)
	}
	if _, err := s.Stat(context.Background(), seg); err == nil {
		t.Fatal("the damaged segment is still there")
	}
	c.ok("deep-scrub", "--all")
	if out := c.ok("--json", "repair", "index"); !strings.Contains(out, `"index_entries"`) {
		t.Fatalf("repair index --json: %s", out)
	}
}

// TestCLIHintsFromSilentFIFOEndOnSignal: --hints naming a FIFO that no one
// writes to (or a stdin that never ends) blocks; a signal (the cancelled
// context) still ends the command, as interrupted (issue 19, case 2).
func TestCLIHintsFromSilentFIFOEndOnSignal(t *testing.T) {
	c := newCLI(t)
	c.ok("init", "--block-size", "64K")
	src, _ := image(t, 128<<10, 5)
	fifo := filepath.Join(t.TempDir(), "hints")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	pr, pw, err := os.Pipe() // a stdin that never ends
	if err != nil {
		t.Fatal(err)
	}
	defer pw.Close()
	defer pr.Close()
	for _, hints := range []string{fifo, "-"} {
		ctx, cancel := context.WithCancel(context.Background())
		time.AfterFunc(300*time.Millisecond, cancel)
		done := make(chan int, 1)
		var errb bytes.Buffer
		go func() {
			done <- run(ctx, []string{"backup", "--base", "20260101T000000Z-00000000", "--hints", hints, src, "vol"},
				cli.IO{In: pr, Out: &bytes.Buffer{}, Err: &errb, Getenv: func(k string) string { return c.env[k] }})
		}()
		select {
		case code := <-done:
			if code != 130 {
				t.Errorf("--hints %s, interrupted: exit %d\n%s", hints, code, errb.String())
			}
		case <-time.After(20 * time.Second):
			t.Fatalf("--hints %s: the backup ignores the signal", hints)
		}
		cancel()
	}
}

// TestCLIPassphraseWithoutEncryption: init with a passphrase but without
// --encrypt is a usage error, and a passphrase on an unencrypted repository
// is refused, saying it may have been tampered with (issue 19, case 1).
func TestCLIPassphraseWithoutEncryption(t *testing.T) {
	c := newCLI(t)
	c.env["CAIRN_PASSWORD"] = "pw"
	if code, _, errs := c.run("", "init"); code != 2 || !strings.Contains(errs, "--encrypt") {
		t.Fatalf("init with a passphrase, no --encrypt: exit %d\n%s", code, errs)
	}
	delete(c.env, "CAIRN_PASSWORD")
	c.ok("init", "--block-size", "64K")
	src, _ := image(t, 128<<10, 6)
	c.env["CAIRN_PASSWORD"] = "pw"
	if code, _, errs := c.run("", "backup", src, "vol"); code == 0 || !strings.Contains(errs, "tampered with") {
		t.Fatalf("backup with a passphrase into an unencrypted repository: exit %d\n%s", code, errs)
	}
}
