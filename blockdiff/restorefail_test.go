package blockdiff

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cairn-backup/cairn/objstore"
)

// TestFailedRestoreLeavesNoFile is issue 19, case 4: a restore that fails
// verification half-way leaves no full-size file at DEST that looks
// restored; an existing file is left as it was; no temporary file remains.
func TestFailedRestoreLeavesNoFile(t *testing.T) {
	for _, kind := range []string{"file", "s3"} {
		t.Run(kind, func(t *testing.T) {
			var s objstore.Store
			if kind == "s3" {
				s = s3Store(t)
			} else {
				s = openStore(t, kind)
			}
			ctx := context.Background()
			r := newRepo(t, s, "pw")
			pool := blockPool(7, 8)
			img := blocksImage(pool, 0, 1, 2, 3, 4, 5, 6, 7)
			v := backupBytes(t, r, "vol", img, BackupOptions{})
			damageObject(t, s, dataKey(v.refs[5].ID))

			dir := t.TempDir()
			dest := filepath.Join(dir, "restored.img")
			err := r.RestoreFile(ctx, v.ID, dest, RestoreFileOptions{})
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("restore of a corrupt block: %v", err)
			}
			if _, serr := os.Stat(dest); !errors.Is(serr, os.ErrNotExist) {
				t.Fatalf("a failed restore left %s (%v)", dest, serr)
			}
			// An existing file stays as it was.
			old := []byte("the previous content")
			if err := os.WriteFile(dest, old, 0o640); err != nil {
				t.Fatal(err)
			}
			if err := r.RestoreFile(ctx, v.ID, dest, RestoreFileOptions{Overwrite: true}); !errors.Is(err, ErrCorrupt) ||
				!strings.Contains(err.Error(), "left as it was") {
				t.Fatalf("restore over a file: %v", err)
			}
			if got := readFile(t, dest); !bytes.Equal(got, old) {
				t.Fatalf("a failed restore changed the existing file (%d bytes)", len(got))
			}
			ents, _ := os.ReadDir(dir)
			if len(ents) != 1 {
				t.Fatalf("files left in the destination folder: %v", ents)
			}
			// A good restore replaces it, keeping its mode.
			v2 := backupBytes(t, r, "vol", blocksImage(pool, 0, 1), BackupOptions{})
			if err := r.RestoreFile(ctx, v2.ID, dest, RestoreFileOptions{Overwrite: true}); err != nil {
				t.Fatal(err)
			}
			if got := readFile(t, dest); !bytes.Equal(got, blocksImage(pool, 0, 1)) {
				t.Fatal("restore over a file: wrong bytes")
			}
			if st, _ := os.Stat(dest); st.Mode().Perm() != 0o640 {
				t.Fatalf("mode %v", st.Mode())
			}
		})
	}
}
