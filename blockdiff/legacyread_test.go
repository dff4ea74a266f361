package blockdiff

import (
	"context"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/objstore"
)

// deepReadStore counts the Gets of versions/ whose reader is past its
// first 64 KiB (what a bufio.Reader takes at its first fill) and not at its
// end yet: the reads of large legacy manifests in progress.
type deepReadStore struct {
	objstore.Store
	mu        sync.Mutex
	deep, max int
}

func (d *deepReadStore) Unwrap() objstore.Store { return d.Store }

func (d *deepReadStore) Get(ctx context.Context, key string, off, n int64) (io.ReadCloser, error) {
	rc, err := d.Store.Get(ctx, key, off, n)
	if err != nil || !strings.HasPrefix(key, "versions/") {
		return rc, err
	}
	return &deepReader{ReadCloser: rc, s: d}, nil
}

type deepReader struct {
	io.ReadCloser
	s    *deepReadStore
	n    int
	deep bool
}

func (r *deepReader) Read(p []byte) (int, error) {
	n, err := r.ReadCloser.Read(p)
	r.n += n
	if !r.deep && r.n > 64<<10 && err == nil {
		r.deep = true
		r.s.mu.Lock()
		r.s.deep++
		r.s.max = max(r.s.max, r.s.deep)
		r.s.mu.Unlock()
		time.Sleep(5 * time.Millisecond) // the others would overlap here
	}
	if r.deep && err != nil {
		r.deep = false
		r.s.mu.Lock()
		r.s.deep--
		r.s.mu.Unlock()
	}
	return n, err
}

// TestLegacyManifestsOneLargeAtATime: manifests of formats 1 and 2 are read
// whole; those larger than legacySmall are read one at a time (listing and
// marking alike), and a cleanup over them still marks every reference.
func TestLegacyManifestsOneLargeAtATime(t *testing.T) {
	old := legacySmall
	legacySmall = 1 << 10
	t.Cleanup(func() { legacySmall = old })
	ctx := context.Background()
	d := &deepReadStore{Store: openStore(t, "file")}
	r := newRepo(t, d, "pw")
	pool := blockPool(41, 12)
	var ids []string
	for i := range 10 {
		v := backupBytes(t, r, "vol", blocksImage(pool, i, i+1), BackupOptions{})
		full, err := r.Version(ctx, v.ID)
		if err != nil {
			t.Fatal(err)
		}
		// And 4,000 blocks that do not exist (random IDs, which do not
		// compress): a legacy manifest of about 150 KB.
		raw := randBytes(uint64(100+i), 32*4000)
		for j := range 4000 {
			var ref Ref
			copy(ref.ID[:], raw[32*j:])
			ref.Length = testBS
			full.refs = append(full.refs, ref)
			full.Size += testBS
		}
		plain, err := encodeManifest(full)
		if err != nil {
			t.Fatal(err)
		}
		if err := r.putMeta(ctx, versionKey(full.ID), plain); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, full.ID)
	}
	res, err := r.Cleanup(ctx, CleanupOptions{DryRun: true, Grace: -1, TempDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	if res.Versions != 10 || res.Referenced != 11 || res.Missing != 40000 || res.Deleted != 0 {
		t.Fatalf("cleanup of legacy manifests: %+v", res)
	}
	if d.max != 1 {
		t.Fatalf("%d large legacy manifests read at once, want 1", d.max)
	}
	if len(legacyBig) != 0 {
		t.Fatal("the legacy token was not given back")
	}
	for _, id := range ids {
		if v, err := r.Version(ctx, id); err != nil || len(v.refs) != 4002 {
			t.Fatalf("version %s: %v", id, err)
		}
	}
}
