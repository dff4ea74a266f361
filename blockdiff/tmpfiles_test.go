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
