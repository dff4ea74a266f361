package blockdiff

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/cairn-backup/cairn/objstore"
)

// sortedEntries returns n entries with random IDs, sorted.
func sortedEntries(seed uint64, n int) []indexEntry {
	raw := randBytes(seed, 32*n)
	es := make([]indexEntry, n)
	for i := range es {
		copy(es[i].ID[:], raw[32*i:])
		es[i].Stored, es[i].Length = int64(1000+i), int64(4096+i)
	}
	slices.SortFunc(es, func(a, b indexEntry) int { return compareID(a.ID, b.ID) })
	return slices.CompactFunc(es, func(a, b indexEntry) bool { return a.ID == b.ID })
}

func seqOf(es []indexEntry) func(func(indexEntry, error) bool) {
	return func(yield func(indexEntry, error) bool) {
		for _, e := range es {
			if !yield(e, nil) {
				return
			}
		}
	}
}

// collect iterates a scan's entries to their end.
func collect(t testing.TB, s *indexScan) []indexEntry {
	t.Helper()
	var out []indexEntry
	for e, err := range s.Entries(context.Background()) {
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, e)
	}
	return out
}

// TestCompactedIndex writes a generation of several packs, reads it back in
// order, and looks every entry up through the filters and frames, with and
// without encryption and a cache directory.
func TestCompactedIndex(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name, pass string
		cache      bool
	}{{"plain", "", false}, {"encrypted-cached", "pw", true}} {
		t.Run(tc.name, func(t *testing.T) {
			s := openStore(t, "mem")
			r := newRepo(t, s, tc.pass)
			if tc.cache {
				r.cache = newIndexCache(t.TempDir(), r.cfg.ID, t.Logf)
			}
			es := sortedEntries(1, packFrames*frameEntries+3*frameEntries+17) // two packs, the last frame short
			res, err := r.writeCompactedIndex(ctx, seqOf(es), compactOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if res.Entries != int64(len(es)) || res.Packs != 2 || len(res.Keys) != 3 {
				t.Fatalf("result %+v", res)
			}
			sc, err := r.scanIndex(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if sc.Generations != 1 || sc.Segments != 0 || len(sc.Keys) != 3 {
				t.Fatalf("scan %+v", sc)
			}
			if got := collect(t, sc); !slices.Equal(got, es) || len(sc.Damaged) != 0 {
				t.Fatalf("read back %d entries (damaged %v), wrote %d", len(got), sc.Damaged, len(es))
			}
			if err := r.refreshDedup(ctx); err != nil {
				t.Fatal(err)
			}
			for i := 0; i < len(es); i += 97 {
				if ok, err := r.inGenerations(ctx, es[i].ID); err != nil || !ok {
					t.Fatalf("entry %d not found: %v", i, err)
				}
			}
			fp := 0
			absent := sortedEntries(2, 20000)
			for _, e := range absent {
				g := r.gens[0]
				if i, first := g.locate(e.ID); i >= 0 {
					p := int(g.frames[i].pack)
					f, err := r.packFilter(ctx, g, p)
					if err != nil || f == nil {
						t.Fatalf("filter of pack %d: %v", p, err)
					}
					if first || bloomHas(f, g.packs[p].k, e.ID) {
						fp++
					}
				}
				if ok, err := r.inGenerations(ctx, e.ID); err != nil || ok {
					t.Fatalf("absent %s found: %v", e.ID, err)
				}
			}
			if fp > len(absent)/50 { // about 0.8% expected
				t.Fatalf("filter: %d false positives of %d", fp, len(absent))
			}
			if tc.cache {
				files, _ := os.ReadDir(r.cache.dir)
				if len(files) < 2 {
					t.Fatalf("cache holds %d files", len(files))
				}
			}
			if c, _ := readConfig(ctx, s); c.Version != FormatVersion {
				t.Fatalf("config version %d", c.Version)
			}
		})
	}
}

// TestCompactedIndexRefusesDisorder: the writer commits nothing when the
// entries are not strictly ascending.
func TestCompactedIndexRefusesDisorder(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, "mem")
	r := newRepo(t, s, "")
	es := sortedEntries(3, 3000)
	es[2000], es[2001] = es[2001], es[2000]
	if _, err := r.writeCompactedIndex(ctx, seqOf(es), compactOptions{}); err == nil {
		t.Fatal("out-of-order entries accepted")
	}
	es = sortedEntries(3, 10)
	es[5] = es[4]
	if _, err := r.writeCompactedIndex(ctx, seqOf(es), compactOptions{}); err == nil {
		t.Fatal("repeated entry accepted")
	}
	if n := countPrefix(t, s, "index/c-"); n != 0 {
		sc, _ := r.scanIndex(ctx)
		if sc.Generations != 0 {
			t.Fatalf("a generation was committed: %v", sc.Keys)
		}
	}
}

// TestIndexMerge: uncompacted segments and generations merge into one
// ascending sequence, each ID once, the segment's entry winning.
func TestIndexMerge(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, "mem")
	r := newRepo(t, s, "")
	a := sortedEntries(4, 5000)
	if _, err := r.writeCompactedIndex(ctx, seqOf(a[:3000]), compactOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.writeCompactedIndex(ctx, seqOf(a[2000:4000]), compactOptions{}); err != nil {
		t.Fatal(err)
	}
	seg := slices.Clone(a[3500:])
	seg[0].Stored = 1
	rand := randBytes(5, len(seg))
	slices.SortFunc(seg, func(x, y indexEntry) int {
		return int(rand[x.Stored%int64(len(rand))]) - int(rand[y.Stored%int64(len(rand))])
	})
	if err := r.writeIndex(ctx, seg); err != nil {
		t.Fatal(err)
	}
	sc, err := r.scanIndex(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got := collect(t, sc)
	if len(got) != len(a) {
		t.Fatalf("%d entries, want %d", len(got), len(a))
	}
	for i, e := range got {
		if e.ID != a[i].ID {
			t.Fatalf("entry %d out of order", i)
		}
		if i == 3500 && e.Stored != 1 {
			t.Fatalf("the generation's entry won over the segment's")
		}
	}
	idx, read, damaged, err := r.readIndex(ctx)
	if err != nil || len(idx) != len(a) || len(damaged) != 0 || len(read) != len(sc.Keys) {
		t.Fatalf("readIndex: %d entries, %d read, %v damaged, %v", len(idx), len(read), damaged, err)
	}
	if err := r.deleteIndexKeys(ctx, sc.Keys, nil); err != nil {
		t.Fatal(err)
	}
	if n := countPrefix(t, s, "index/"); n != 0 {
		t.Fatalf("%d index objects left", n)
	}
}

// countingStore counts Gets by key prefix.
type getCountStore struct {
	objstore.Store
	index atomic.Int64
}

func (c *getCountStore) Get(ctx context.Context, key string, off, n int64) (io.ReadCloser, error) {
	if strings.HasPrefix(key, "index/") {
		c.index.Add(1)
	}
	return c.Store.Get(ctx, key, off, n)
}

// TestBackupCompactedIndex: after a repair wrote a compacted generation, a
// backup of the same data dedups every block through filter and frames, a
// differential backup with empty hints reads no index object, a damaged
// frame costs only re-uploads, and everything restores.
func TestBackupCompactedIndex(t *testing.T) {
	ctx := context.Background()
	base := openStore(t, "mem")
	s := &getCountStore{Store: base}
	r := newRepo(t, s, "pw")
	pool := blockPool(7, 40)
	img := blocksImage(pool, slices.Collect(func(yield func(int) bool) {
		for i := range 40 {
			if !yield(i) {
				return
			}
		}
	})...)
	v1 := backupBytes(t, r, "vol", img, BackupOptions{})
	if _, err := r.RepairIndex(ctx, RepairIndexOptions{}); err != nil {
		t.Fatal(err)
	}
	sc, _ := r.scanIndex(ctx)
	if sc.Generations != 1 || sc.Segments != 0 {
		t.Fatalf("after repair: %+v", sc)
	}
	cache := t.TempDir()
	r2 := openRepo(t, s, Options{Passphrase: []byte("pw"), CacheDir: cache})
	v2 := backupBytes(t, r2, "vol", img, BackupOptions{})
	if v2.Stats.BlocksNew != 0 || v2.Stats.BlocksDeduped != 40 {
		t.Fatalf("second backup: %+v", v2.Stats)
	}
	if !bytes.Equal(restoreBytes(t, r2, v2.ID), img) {
		t.Fatal("restore differs")
	}
	// A differential backup that reads no block reads no index object.
	r3 := openRepo(t, s, Options{Passphrase: []byte("pw")})
	before := s.index.Load()
	v3 := backupBytes(t, r3, "vol", img, BackupOptions{Base: v2.ID, Hints: []Extent{}, VerifyPercent: 0})
	if got := s.index.Load() - before; got != 0 {
		t.Fatalf("differential backup read %d index objects", got)
	}
	if v3.Stats.BlocksFromBase+v3.Stats.BlocksVerified != 40 {
		t.Fatalf("differential: %+v", v3.Stats)
	}
	// The cache served the directory and frames: a new process reads the
	// store's index only for the listing.
	r4 := openRepo(t, s, Options{Passphrase: []byte("pw"), CacheDir: cache})
	before = s.index.Load()
	backupBytes(t, r4, "vol", img, BackupOptions{})
	if got := s.index.Load() - before; got != 0 {
		t.Fatalf("cached backup read %d index objects from the store", got)
	}
	// A new generation replaces the cached one: its files leave the cache.
	stale := filepath.Join(cache, r.cfg.ID, "index", "c-"+strings.Repeat("0", 32)+"-000000.0")
	if err := os.WriteFile(stale, []byte("old"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := openRepo(t, s, Options{Passphrase: []byte("pw"), CacheDir: cache}).refreshDedup(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(stale); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a file of a generation gone from the index stayed in the cache: %v", err)
	}
	// A damaged pack: its frames count as absent, blocks are stored again.
	for _, k := range sc.Keys {
		if kind, _ := parseIndexKey(k); kind == keyPack {
			b := getObject(t, base, k)
			b[len(b)/2] ^= 1
			putObject(t, base, k, b)
		}
	}
	r5 := openRepo(t, s, Options{Passphrase: []byte("pw")})
	v5 := backupBytes(t, r5, "vol", img, BackupOptions{})
	if v5.Stats.BlocksNew == 0 {
		t.Fatalf("nothing stored again with a damaged pack: %+v", v5.Stats)
	}
	// A cached damaged frame is dropped and read again from the store.
	files, _ := filepath.Glob(filepath.Join(cache, "*", "index", "c-*.*"))
	for _, f := range files {
		_ = os.WriteFile(f, []byte("garbage"), 0o600)
	}
	for _, id := range []string{v1.ID, v2.ID, v3.ID, v5.ID} {
		if !bytes.Equal(restoreBytes(t, r5, id), img) {
			t.Fatalf("restore of %s differs", id)
		}
	}
	sc, _ = r5.scanIndex(ctx)
	collect(t, sc)
	if len(sc.Damaged) == 0 {
		t.Fatal("the damaged pack was not reported")
	}
}

// TestUpgradeFormat: a version-2 encrypted repository goes to version 3
// with its MAC renewed, and opens again.
func TestUpgradeFormat(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, "mem")
	r := newRepo(t, s, "pw")
	r.formatVersion = 2 // as if opened at version 2
	if err := r.upgradeFormat(ctx, 3); err != nil {
		t.Fatal(err)
	}
	r2, err := Open(ctx, s, Options{Passphrase: []byte("pw")})
	if err != nil {
		t.Fatal(err)
	}
	r2.Close()
	if c, _ := readConfig(ctx, s); c.Version != 3 {
		t.Fatalf("version %d", c.Version)
	}
	if err := r.upgradeFormat(ctx, 4); err == nil {
		t.Fatal("upgrade past this build's version accepted")
	}
}

// TestParseIndexKey: the key forms, and nothing else.
func TestParseIndexKey(t *testing.T) {
	h := strings.Repeat("ab", 16)
	for key, want := range map[string]indexKeyKind{
		"index/" + h:                    keySegment,
		"index/c-" + h:                  keyDir,
		"index/c-" + h + "-000012":      keyPack,
		"index/c-" + h + "-00001":       keyUnknown,
		"index/c-" + h + "x":            keyUnknown,
		"index/" + strings.ToUpper(h):   keyUnknown,
		"index/" + h + ".tmp":           keyUnknown,
		"versions/" + h:                 keyUnknown,
		"index/c-" + h[:31] + "-000001": keyUnknown,
	} {
		if got, _ := parseIndexKey(key); got != want {
			t.Errorf("%s: %v, want %v", key, got, want)
		}
	}
}

// FuzzDecodeDir feeds arbitrary plaintexts to the directory decoder: an
// error or a directory whose frames are ordered and add up, never a panic.
func FuzzDecodeDir(f *testing.F) {
	r := &Repository{}
	_ = r
	g := &genDir{gen: strings.Repeat("0", 32), entries: 3,
		packs:  []packInfo{{frames: 2, first: 0, k: bloomK, words: 1, filterSize: 8 + 32 + 1}},
		frames: []frameInfo{{first: ID{1}, size: 40, count: 2}, {first: ID{2}, size: 30, count: 1}}}
	good := encodeDir(g)
	f.Add(good)
	f.Add(good[:len(good)-3])
	f.Add([]byte("CRNX\x01"))
	f.Fuzz(func(t *testing.T, b []byte) {
		d, err := decodeDir(strings.Repeat("0", 32), b)
		if err != nil {
			return
		}
		var n int64
		for i, fr := range d.frames {
			n += int64(fr.count)
			if i > 0 && compareID(d.frames[i-1].first, fr.first) >= 0 {
				t.Fatal("frames out of order")
			}
		}
		if n != d.entries {
			t.Fatal("entries do not add up")
		}
		for _, p := range d.packs {
			_ = d.mayHold(ID{3})
			if p.words == 0 || p.filterSize < int64(p.words)*8+33 || p.filterOff+p.filterSize != p.size {
				t.Fatal("bad filter size")
			}
		}
	})
}

// FuzzOpenFrame feeds arbitrary frame bodies to the frame decoder of a
// generation of one frame.
func FuzzOpenFrame(f *testing.F) {
	c, err := newCodec(nil, 1, 1)
	if err != nil {
		f.Fatal(err)
	}
	r := &Repository{codec: c}
	es := sortedEntries(9, 5)
	gen := strings.Repeat("1", 32)
	good := c.seal(nil, frameAADKey(packKey(gen, 0), 0), encodeIndex(es), false)
	f.Add(good)
	f.Add(good[:len(good)/2])
	f.Add(c.seal(nil, frameAADKey(packKey(gen, 0), 0), encodeIndex(nil), false)) // a valid frame of no entry
	f.Fuzz(func(t *testing.T, b []byte) {
		g := &genDir{gen: gen, packs: []packInfo{{key: packKey(gen, 0), frames: 1}},
			frames: []frameInfo{{first: es[0].ID, size: int64(len(b)), count: 5}}}
		got, err := r.openFrame(g, 0, b)
		if err == nil && !slices.Equal(got, es) && len(got) != 5 {
			t.Fatal("frame accepted with the wrong count")
		}
		if err != nil && !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrUnsupportedFormat) {
			t.Fatalf("not damage: %v", err)
		}
	})
}

// TestLegacyRepositoryCompacted: an encrypted repository of format version
// 1 (no MAC, its index uncompacted segments) deduplicates as before; its
// first compaction raises the config to version 3 with a MAC, after which it
// opens, restores and deduplicates through the generation.
func TestLegacyRepositoryCompacted(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, "file")
	r0 := newRepo(t, s, "pw")
	img := randBytes(31, 6*testBS)
	v1 := backupBytes(t, r0, "vol", img, BackupOptions{})
	legacyConfig(t, s, "pw")
	r := openRepo(t, s, Options{Passphrase: []byte("pw")})
	if v := backupBytes(t, r, "vol", img, BackupOptions{}); v.Stats.BlocksDeduped != 6 {
		t.Fatalf("legacy repository: %+v", v.Stats)
	}
	if m := getConfigMap(t, s); m["version"].(float64) != 2 {
		t.Fatalf("config after a backup: %v", m["version"])
	}
	legacyConfig(t, s, "pw")
	r = openRepo(t, s, Options{Passphrase: []byte("pw")})
	if _, err := r.RepairIndex(ctx, RepairIndexOptions{}); err != nil {
		t.Fatal(err)
	}
	if m := getConfigMap(t, s); m["version"].(float64) != 3 || m["mac"] == nil {
		t.Fatalf("config after the compaction: %v", m)
	}
	r2 := openRepo(t, s, Options{Passphrase: []byte("pw")})
	if v := backupBytes(t, r2, "vol", img, BackupOptions{}); v.Stats.BlocksDeduped != 6 || v.Stats.BlocksNew != 0 {
		t.Fatalf("after the compaction: %+v", v.Stats)
	}
	if !bytes.Equal(restoreBytes(t, r2, v1.ID), img) {
		t.Fatal("restore differs")
	}
}

// TestBackupWarnsOfUncompactedIndex: a backup that loads a large
// uncompacted index (an upgraded format-2 repository before its first
// cleanup) says so, with the count and the memory it costs; after cleanup
// has compacted the index it does not.
func TestBackupWarnsOfUncompactedIndex(t *testing.T) {
	old := uncompactedWarn
	uncompactedWarn = 8
	defer func() { uncompactedWarn = old }()
	s := openStore(t, "mem")
	r := newRepo(t, s, "")
	backupBytes(t, r, "vol", randBytes(3, 12*testBS), BackupOptions{})

	backupLogging := func(seed uint64) string {
		var logs bytes.Buffer
		r2, err := Open(context.Background(), s, Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
		if err != nil {
			t.Fatal(err)
		}
		defer r2.Close()
		backupBytes(t, r2, "vol", randBytes(seed, 2*testBS), BackupOptions{})
		return logs.String()
	}
	if out := backupLogging(4); !strings.Contains(out, "not yet compacted") || !strings.Contains(out, "objects_uncompacted=12") {
		t.Fatalf("a backup over 12 uncompacted objects logged no warning naming them:\n%s", out)
	}
	if _, err := r.Cleanup(context.Background(), CleanupOptions{Grace: -1}); err != nil {
		t.Fatal(err)
	}
	if out := backupLogging(5); strings.Contains(out, "not yet compacted") {
		t.Fatalf("a backup after cleanup still warns:\n%s", out)
	}
}
