package blockdiff

import (
	"bytes"
	"context"
	"path/filepath"
	"testing"
)

// TestSynthesize writes a small synthetic repository in both index forms
// and checks it reads back: every version lists, the index holds every
// block, the image version restores, and a backup of the image dedups.
func TestSynthesize(t *testing.T) {
	ctx := context.Background()
	for _, uncompacted := range []bool{false, true} {
		dir := t.TempDir()
		s := openStore(t, "file")
		_ = dir
		r := newRepo(t, s, "")
		res, err := Synthesize(ctx, r, SynthOptions{Blocks: 3000, Versions: 25, Volumes: 4, RefsPerVersion: 200,
			ImageBlocks: 4, Uncompacted: uncompacted, DataEvery: 2})
		if err != nil {
			t.Fatal(err)
		}
		if res.Entries != 3000 || res.Versions != 25 || res.DataObjects != 2996/2+4 {
			t.Fatalf("uncompacted=%v: %+v", uncompacted, res)
		}
		vs, err := r.List(ctx, Filter{})
		if err != nil || len(vs) != 25 {
			t.Fatalf("%d versions: %v", len(vs), err)
		}
		idx, _, damaged, err := r.readIndex(ctx)
		if err != nil || len(idx) != 3000 || len(damaged) != 0 {
			t.Fatalf("index: %d entries, %v damaged, %v", len(idx), damaged, err)
		}
		img := SynthImage(0, 4, testBS)
		if got := restoreBytes(t, r, res.ImageVersion); !bytes.Equal(got, img) {
			t.Fatal("image version does not restore")
		}
		r2 := openRepo(t, s, Options{CacheDir: filepath.Join(dir, "cache")})
		v := backupBytes(t, r2, "img", img, BackupOptions{})
		if v.Stats.BlocksDeduped != 4 || v.Stats.BlocksNew != 0 {
			t.Fatalf("backup of the image: %+v", v.Stats)
		}
	}
}
