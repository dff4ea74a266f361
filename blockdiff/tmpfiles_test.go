package blockdiff

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/objstore"
)

// TestCleanupRemovesKilledWriteTempFiles is issue 19, case 5: the file
// backend's .cairn-tmp-* files of writes that were killed are removed by
// cleanup once older than the grace; young ones (a write may be running)
// stay.
func TestCleanupRemovesKilledWriteTempFiles(t *testing.T) {
	root := t.TempDir()
	s, err := objstore.Open(context.Background(), "file://"+root)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	r := newRepo(t, s, "")
	backupBytes(t, r, "vol", randBytes(1, 2*testBS), BackupOptions{})
	var old, young []string
	for i, dir := range []string{"data/ab", "index", "versions", "locks", "."} {
		p := filepath.Join(root, dir)
		if err := os.MkdirAll(p, 0o700); err != nil {
			t.Fatal(err)
		}
		o := filepath.Join(p, ".cairn-tmp-old"+string(rune('0'+i)))
		y := filepath.Join(p, ".cairn-tmp-young"+string(rune('0'+i)))
		for _, f := range []string{o, y} {
			if err := os.WriteFile(f, []byte("partial"), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		then := time.Now().Add(-2 * time.Hour)
		if err := os.Chtimes(o, then, then); err != nil {
			t.Fatal(err)
		}
		old, young = append(old, o), append(young, y)
	}
	res, err := r.Cleanup(context.Background(), CleanupOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if res.TempFilesRemoved != len(old) {
		t.Fatalf("removed %d temporary files, want %d", res.TempFilesRemoved, len(old))
	}
	for _, f := range old {
		if _, err := os.Stat(f); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s is still there", strings.TrimPrefix(f, root))
		}
	}
	for _, f := range young {
		if _, err := os.Stat(f); err != nil {
			t.Errorf("young %s removed: %v", strings.TrimPrefix(f, root), err)
		}
	}
	if rep := scrub(t, r, true); !rep.OK() {
		t.Fatalf("deep scrub: %+v", rep)
	}
}

// TestRestoreRemovesKilledRestoreTemps: a restore killed midway leaves its
// hidden temporary beside the destination. The next restore to the same path
// removes those no process holds any more (older than a minute), and
// leaves a live restore's (locked), a just-created one's, and other files.
func TestRestoreRemovesKilledRestoreTemps(t *testing.T) {
	r := newRepo(t, openStore(t, "mem"), "")
	data := randBytes(7, 3*testBS)
	v := backupBytes(t, r, "vol", data, BackupOptions{})
	dir := t.TempDir()
	dest := filepath.Join(dir, "disk.img")
	then := time.Now().Add(-time.Hour)
	mk := func(name string, old bool) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte("partial"), 0o600); err != nil {
			t.Fatal(err)
		}
		if old {
			if err := os.Chtimes(p, then, then); err != nil {
				t.Fatal(err)
			}
		}
		return p
	}
	killed := mk(".disk.img.cairn-restore-111", true)
	live := mk(".disk.img.cairn-restore-222", true)
	young := mk(".disk.img.cairn-restore-333", false)
	other := mk(".other.img.cairn-restore-444", true)
	plain := mk("disk.img.cairn-restore-555", true) // not hidden: not ours
	// A live restore holds the lock on its temporary.
	holder, err := os.Open(live)
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Close()
	if err := lockFile(holder); err != nil {
		t.Fatal(err)
	}

	if err := r.RestoreFile(context.Background(), v.ID, dest, RestoreFileOptions{}); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(dest)
	if err != nil || string(got) != string(data) {
		t.Fatalf("restored %d bytes (%v), want the %d backed up", len(got), err, len(data))
	}
	if _, err := os.Stat(killed); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the killed restore's temporary is still there (%v)", err)
	}
	for _, p := range []string{live, young, other, plain} {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("%s was removed: %v", filepath.Base(p), err)
		}
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 5 { // disk.img and the four left alone
		t.Errorf("the folder holds %d entries after the restore, want 5", len(entries))
	}
}
