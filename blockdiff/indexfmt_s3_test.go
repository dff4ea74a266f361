package blockdiff

import (
	"bytes"
	"context"
	"slices"
	"testing"
)

// TestCompactedIndexS3: a generation of two packs on the real S3 server,
// looked up with ranged reads of single frames (no cache) and listed in
// order; a backup dedups through it and restores.
func TestCompactedIndexS3(t *testing.T) {
	ctx := context.Background()
	s := s3Store(t)
	r := newRepo(t, s, "pw")
	es := sortedEntries(21, packFrames*frameEntries+2*frameEntries+5)
	if _, err := r.writeCompactedIndex(ctx, seqOf(es), compactOptions{}); err != nil {
		t.Fatal(err)
	}
	sc, err := r.scanIndex(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := collect(t, sc); !slices.Equal(got, es) {
		t.Fatalf("listed %d entries, wrote %d", len(got), len(es))
	}
	r2 := openRepo(t, s, Options{Passphrase: []byte("pw")}) // no cache: every frame a ranged Get
	if err := r2.refreshDedup(ctx); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < len(es); i += len(es) / 40 {
		if ok, err := r2.inGenerations(ctx, es[i].ID); err != nil || !ok {
			t.Fatalf("entry %d: %v %v", i, ok, err)
		}
	}
	if ok, err := r2.inGenerations(ctx, ID{0x42, 0x42}); err != nil || ok {
		t.Fatalf("absent ID: %v %v", ok, err)
	}

	img := randBytes(22, 12*testBS)
	v1 := backupBytes(t, r2, "vol", img, BackupOptions{})
	if _, err := r2.RepairIndex(ctx, RepairIndexOptions{}); err != nil {
		t.Fatal(err)
	}
	r3 := openRepo(t, s, Options{Passphrase: []byte("pw"), CacheDir: t.TempDir()})
	v2 := backupBytes(t, r3, "vol", img, BackupOptions{})
	if v2.Stats.BlocksDeduped != 12 || v2.Stats.BlocksNew != 0 {
		t.Fatalf("backup through the generation on S3: %+v", v2.Stats)
	}
	for _, id := range []string{v1.ID, v2.ID} {
		if !bytes.Equal(restoreBytes(t, r3, id), img) {
			t.Fatalf("restore of %s differs", id)
		}
	}
}
