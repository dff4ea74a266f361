package blockdiff

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/objstore"
)

// syntheticVersion is a valid block version of n references, every 7th
// sparse, without any data object behind them.
func syntheticVersion(id string, n int) *Version {
	v := &Version{ID: id, Volume: "vol", Kind: KindBlock, BlockSize: testBS, Created: time.Now().UTC(),
		Labels: map[string]string{"a": "b"}, Status: StatusValid}
	for i := range n {
		ref := Ref{Length: testBS}
		if i%7 == 3 {
			ref.Sparse = true
		} else {
			ref.ID = ID{byte(i), byte(i >> 8), byte(i >> 16), 0xfe}
		}
		v.refs = append(v.refs, ref)
		v.Size += ref.Length
	}
	return v
}

func TestFramedManifest(t *testing.T) {
	for _, pass := range []string{"", "secret"} {
		t.Run(fmt.Sprintf("encrypted=%v", pass != ""), func(t *testing.T) {
			ctx := context.Background()
			s := openStore(t, "mem")
			r := newRepo(t, s, pass)
			if r.cfg.Version != 3 {
				t.Fatalf("new repository of format %d", r.cfg.Version)
			}
			// Two frames and a bit, so that frame boundaries are crossed.
			v := syntheticVersion("20261206T010203Z-00000001", 2*refsPerFrame+5)
			if err := r.putVersion(ctx, v); err != nil {
				t.Fatal(err)
			}
			body := getObject(t, s, versionKey(v.ID))
			if !isFramedManifest(body) {
				t.Fatalf("manifest starts with %q", body[:5])
			}
			h, err := r.versionHeader(ctx, v.ID)
			if err != nil {
				t.Fatal(err)
			}
			if h.refs != nil || h.Size != v.Size || h.Labels["a"] != "b" || h.Status != StatusValid {
				t.Fatalf("header %+v", h)
			}
			full, err := r.Version(ctx, v.ID)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(full.refs, v.refs) {
				t.Fatal("references differ after a round trip")
			}

			// A label and a protection rewrite the header only: the refs
			// frames are the same bytes.
			hl, _ := headerLen(body)
			tail := body[manifestPreamble+hl:]
			if _, err := r.SetLabels(ctx, v.ID, map[string]string{"long": string(bytes.Repeat([]byte("x"), 200))}, []string{"a"}); err != nil {
				t.Fatal(err)
			}
			if _, err := r.SetProtected(ctx, v.ID, true); err != nil {
				t.Fatal(err)
			}
			body2 := getObject(t, s, versionKey(v.ID))
			hl2, _ := headerLen(body2)
			if !bytes.Equal(body2[manifestPreamble+hl2:], tail) {
				t.Fatal("the refs frames changed in a header rewrite")
			}
			full, err = r.Version(ctx, v.ID)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(full.refs, v.refs) || !full.Protected || full.Labels["a"] != "" || len(full.Labels["long"]) != 200 {
				t.Fatalf("after the rewrites: protected %v labels %v, refs equal %v", full.Protected, full.Labels, slices.Equal(full.refs, v.refs))
			}

			// A header longer than the first ranged read.
			many := map[string]string{}
			for i := range 40 {
				many[fmt.Sprintf("label-%02d", i)] = fmt.Sprintf("%x", randBytes(uint64(i), 100))
			}
			if _, err := r.SetLabels(ctx, v.ID, many, nil); err != nil {
				t.Fatal(err)
			}
			if b := getObject(t, s, versionKey(v.ID)); func() int { n, _ := headerLen(b); return n }() <= headPeek {
				t.Fatal("the header is not longer than the first read")
			}
			vs, err := r.List(ctx, Filter{Labels: map[string]string{"label-07": many["label-07"]}})
			if err != nil || len(vs) != 1 || vs[0].ID != v.ID {
				t.Fatalf("List with a long header: %v, %v", vs, err)
			}

			// A damaged refs frame: the header still reads; the references do not.
			body3 := getObject(t, s, versionKey(v.ID))
			body3[len(body3)-10] ^= 1
			putObject(t, s, versionKey(v.ID), body3)
			if _, err := r.versionHeader(ctx, v.ID); err != nil {
				t.Fatalf("header of a manifest with a damaged refs frame: %v", err)
			}
			if _, err := r.Version(ctx, v.ID); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("damaged refs frame read as %v", err)
			}
			// Truncated after the header: damaged too.
			hl3, _ := headerLen(body3)
			putObject(t, s, versionKey(v.ID), body3[:manifestPreamble+hl3+100])
			if _, err := r.Version(ctx, v.ID); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("truncated manifest read as %v", err)
			}
			// A damaged header: listed as damaged.
			body3[manifestPreamble+5] ^= 1
			putObject(t, s, versionKey(v.ID), body3)
			vs, err = r.List(ctx, Filter{})
			if err != nil || len(vs) != 1 || vs[0].Status != StatusDamaged {
				t.Fatalf("damaged header listed as %v, %v", vs, err)
			}
		})
	}
}

// TestVersion1Manifests: manifests of formats 1 and 2 (one sealed envelope)
// still read, whole or header only, and a rewrite in a format-3 repository
// frames them, keeping their references.
func TestVersion1Manifests(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, "mem")
	r := newRepo(t, s, "pw")
	v := syntheticVersion("20261206T010203Z-00000002", 5000)
	plain, err := encodeManifest(v)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.putMeta(ctx, versionKey(v.ID), plain); err != nil {
		t.Fatal(err)
	}
	h, err := r.versionHeader(ctx, v.ID)
	if err != nil || h.refs != nil || h.Size != v.Size {
		t.Fatalf("header of a version-1 manifest: %+v, %v", h, err)
	}
	var n int
	if _, err := r.scanVersion(ctx, v.ID, nil, func(Ref) error { n++; return nil }); err != nil || n != len(v.refs) {
		t.Fatalf("scan: %d refs, %v", n, err)
	}
	if _, err := r.SetProtected(ctx, v.ID, true); err != nil {
		t.Fatal(err)
	}
	if !isFramedManifest(getObject(t, s, versionKey(v.ID))) {
		t.Fatal("a rewrite in a format-3 repository kept the version-1 encoding")
	}
	full, err := r.Version(ctx, v.ID)
	if err != nil || !full.Protected || !slices.Equal(full.refs, v.refs) {
		t.Fatalf("after the rewrite: %v", err)
	}

	// A format-2 repository writes and rewrites the version-1 encoding.
	r.cfg.Version = 2
	v2 := syntheticVersion("20261206T010203Z-00000003", 10)
	if err := r.putVersion(ctx, v2); err != nil {
		t.Fatal(err)
	}
	if _, err := r.SetLabels(ctx, v2.ID, map[string]string{"x": "y"}, nil); err != nil {
		t.Fatal(err)
	}
	if isFramedManifest(getObject(t, s, versionKey(v2.ID))) {
		t.Fatal("a format-2 repository wrote a framed manifest")
	}
	full, err = r.Version(ctx, v2.ID)
	if err != nil || full.Labels["x"] != "y" || !slices.Equal(full.refs, v2.refs) {
		t.Fatalf("format-2 rewrite: %v", err)
	}
}

// TestListHeaderOnly: listing reads headers only, so many versions of many
// references cost memory per version, not per reference.
func TestListHeaderOnly(t *testing.T) {
	ctx := context.Background()
	s := &countingStore{Store: openStore(t, "mem")}
	r := newRepo(t, s, "")
	const versions, refs = 20, 4096
	for i := range versions {
		if err := r.putVersion(ctx, syntheticVersion(fmt.Sprintf("20261206T010203Z-%08d", i), refs)); err != nil {
			t.Fatal(err)
		}
	}
	s.bytes.Store(0)
	vs, err := r.List(ctx, Filter{})
	if err != nil || len(vs) != versions {
		t.Fatalf("%d versions, %v", len(vs), err)
	}
	if got := s.bytes.Load(); got > versions*headPeek {
		t.Fatalf("List read %d bytes for %d versions of %d refs", got, versions, refs)
	}
}

// FuzzFramedManifest feeds arbitrary manifest objects to the framed reader
// (and the version-1 one, for bodies that are not framed): an error or a
// version, never a panic or an unbounded allocation.
func FuzzFramedManifest(f *testing.F) {
	store := openStore(f, "mem")
	r := newRepo(f, store, "")
	ctx := context.Background()
	const id = "20261206T010203Z-0000000f"
	v := syntheticVersion(id, 40)
	good, err := r.encodeFramed(v)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add(good[:len(good)-3])
	f.Add(good[:manifestPreamble+10])
	f.Add([]byte("CRNM\x03\x00\x00\x00\x05hello"))
	f.Fuzz(func(t *testing.T, b []byte) {
		if err := store.Put(ctx, versionKey(id), bytes.NewReader(b), int64(len(b))); err != nil {
			t.Fatal(err)
		}
		full, err := r.Version(ctx, id)
		h, herr := r.versionHeader(ctx, id)
		if err == nil && herr != nil {
			t.Fatalf("the whole manifest reads but its header does not: %v", herr)
		}
		if err == nil && (h.Size != full.Size || h.Status != full.Status) {
			t.Fatal("header and whole manifest disagree")
		}
	})
}

// FuzzDecodeHeader checks the header frame's decoder alone.
func FuzzDecodeHeader(f *testing.F) {
	good, err := encodeHeader(syntheticVersion("x", 3), refsSummary{count: 3, frames: 1, refsBytes: 100})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add([]byte("CRNH\x03"))
	f.Fuzz(func(t *testing.T, b []byte) {
		if v, s, err := decodeHeader(b); err == nil {
			if _, err := encodeHeader(v, s); err != nil {
				t.Fatal(err)
			}
		}
	})
}

// countingStore counts the bytes read through Get.
type countingStore struct {
	objstore.Store
	bytes atomic.Int64
}

func (c *countingStore) Get(ctx context.Context, key string, off, n int64) (io.ReadCloser, error) {
	rc, err := c.Store.Get(ctx, key, off, n)
	if err != nil {
		return nil, err
	}
	return countingReader{rc, &c.bytes}, nil
}

type countingReader struct {
	io.ReadCloser
	n *atomic.Int64
}

func (c countingReader) Read(p []byte) (int, error) {
	n, err := c.ReadCloser.Read(p)
	c.n.Add(int64(n))
	return n, err
}

// TestFormat2Repository: a repository of format 2 (version-1 manifests,
// uncompacted segments) lists, enforces and cleans up with this build;
// cleanup raises it to format 3, after which new manifests are framed and
// the old ones still read.
func TestFormat2Repository(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, "file")
	newRepo(t, s, "")
	cfg := getObject(t, s, configKey)
	cfg2 := bytes.Replace(cfg, []byte(`"version": 3`), []byte(`"version": 2`), 1)
	if bytes.Equal(cfg, cfg2) {
		t.Fatalf("no version 3 in %s", cfg)
	}
	putObject(t, s, configKey, cfg2)
	r := openRepo(t, s, Options{})
	pool := blockPool(5, 10)
	var vs []*Version
	for i := range 4 {
		vs = append(vs, backupBytes(t, r, "vol", blocksImage(pool, i, i+1, i+2), BackupOptions{}))
	}
	for _, v := range vs {
		if isFramedManifest(getObject(t, s, versionKey(v.ID))) {
			t.Fatal("a format-2 repository got a framed manifest")
		}
	}
	if _, err := r.SetLabels(ctx, vs[3].ID, map[string]string{"k": "v"}, nil); err != nil {
		t.Fatal(err)
	}
	res, err := r.Enforce(ctx, "latest2", EnforceOptions{})
	if err != nil || len(res.Volumes) != 1 || len(res.Volumes[0].Removed) != 2 {
		t.Fatalf("enforce: %+v, %v", res, err)
	}
	cl, err := r.Cleanup(ctx, CleanupOptions{Grace: -1})
	if err != nil || cl.Deleted != 2 || cl.Referenced != 4 || cl.Missing != 0 {
		t.Fatalf("cleanup: %+v, %v", cl, err)
	}
	for _, v := range vs[2:] {
		if got := restoreBytes(t, r, v.ID); !bytes.Equal(got, blocksImage(pool, slices.Index(vs, v), slices.Index(vs, v)+1, slices.Index(vs, v)+2)) {
			t.Fatalf("%s restores wrong bytes", v.ID)
		}
	}
	if !bytes.Contains(getObject(t, s, configKey), []byte(`"version": 3`)) {
		t.Fatal("cleanup left the config at format 2")
	}
	v5 := backupBytes(t, r, "vol", blocksImage(pool, 7), BackupOptions{})
	if !isFramedManifest(getObject(t, s, versionKey(v5.ID))) {
		t.Fatal("after the upgrade, a new manifest is not framed")
	}
	if vs, err := r.List(ctx, Filter{Labels: map[string]string{"k": "v"}}); err != nil || len(vs) != 1 {
		t.Fatalf("list after the upgrade: %v, %v", vs, err)
	}
}
