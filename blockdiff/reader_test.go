package blockdiff

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"sync"
	"testing"
)

// TestVersionReader reads random ranges of a version concurrently and
// compares them with the image; a corrupt block fails its reads.
func TestVersionReader(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, "mem")
	r := newRepo(t, s, "pw")
	img := append(randBytes(7, 5*testBS), make([]byte, 2*testBS)...)
	img = append(img, textBytes(8, testBS+123)...)
	v := backupBytes(t, r, "vol", img, BackupOptions{})
	vr, err := r.OpenVersion(ctx, v.ID, ReaderOptions{CacheBlocks: 2})
	if err == nil {
		defer vr.Close()
	}
	if err != nil {
		t.Fatal(err)
	}
	if vr.Size() != int64(len(img)) {
		t.Fatalf("size %d", vr.Size())
	}
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(g), 1))
			for range 200 {
				off := rng.Int64N(int64(len(img)))
				p := make([]byte, rng.IntN(3*testBS))
				n, err := vr.ReadAt(p, off)
				want := img[off:min(off+int64(len(p)), int64(len(img)))]
				if n != len(want) || !bytes.Equal(p[:n], want) || (n < len(p)) != (err == io.EOF) {
					t.Errorf("ReadAt(%d bytes at %d) = %d, %v", len(p), off, n, err)
					return
				}
			}
		})
	}
	wg.Wait()
	if n, err := vr.ReadAt(make([]byte, 10), int64(len(img))); n != 0 || err != io.EOF {
		t.Errorf("read at the end: %d %v", n, err)
	}

	key := dataKey(v.refs[3].ID)
	body := getObject(t, s, key)
	body[20] ^= 1
	putObject(t, s, key, body)
	vr2, err := r.OpenVersion(ctx, v.ID, ReaderOptions{})
	if err == nil {
		defer vr2.Close()
	}
	if err != nil {
		t.Fatal(err)
	}
	if _, err := vr2.ReadAt(make([]byte, 10), 3*testBS+5); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("read of a corrupt block: %v", err)
	}
	if _, err := vr2.ReadAt(make([]byte, 10), 0); err != nil {
		t.Fatalf("read of a good block: %v", err)
	}
	if _, err := r.Scrub(ctx, ScrubOptions{Deep: true, All: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.OpenVersion(ctx, v.ID, ReaderOptions{}); !errors.Is(err, ErrNotValid) {
		t.Fatalf("open of an invalid version: %v", err)
	}
	vr3, err := r.OpenVersion(ctx, v.ID, ReaderOptions{AllowInvalid: true})
	if err != nil {
		t.Fatal(err)
	}
	vr3.Close()
}

// TestStorageStats counts objects, bytes and the dedup ratio.
func TestStorageStats(t *testing.T) {
	r := newRepo(t, openStore(t, "mem"), "")
	pool := blockPool(9, 4)
	backupBytes(t, r, "a", blocksImage(pool, 0, 1, 2), BackupOptions{})
	backupBytes(t, r, "b", append(blocksImage(pool, 0, 1, 3), make([]byte, testBS)...), BackupOptions{})
	st, err := r.StorageStats(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if st.Versions != 2 || st.Objects != 4 || st.UniqueBytes != 4*testBS || st.LogicalBytes != 7*testBS ||
		st.SparseBytes != testBS || st.DedupRatio != 1.5 || st.UnreferencedObjects != 0 || st.IndexSegments != 2 {
		t.Fatalf("stats: %+v", st)
	}
}
