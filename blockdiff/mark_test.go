package blockdiff

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"testing"
)

// smallRuns makes the sorter and the lister spill after a few records, and
// merge runs in several passes, for the duration of a test.
func smallRuns(t *testing.T, run, fanIn, spill int) {
	oldRun, oldFan, oldSpill := markRunSize, markFanIn, listSpill
	markRunSize, markFanIn, listSpill = run, fanIn, spill
	t.Cleanup(func() { markRunSize, markFanIn, listSpill = oldRun, oldFan, oldSpill })
}

func TestMarkSorter(t *testing.T) {
	smallRuns(t, 100, 3, 10)
	dir := t.TempDir()
	s := newMarkSorter(dir)
	want := map[ID]markRec{}
	rng := rand.New(rand.NewPCG(1, 2))
	for range 50 {
		var batch []markRec
		for range rng.IntN(200) {
			m := markRec{length: uint32(rng.IntN(1000) + 1), flags: uint8(1 << rng.IntN(3))}
			m.id[0], m.id[1] = byte(rng.IntN(256)), byte(rng.IntN(8)) // many duplicates
			m.length = uint32(m.id[0]) + 1                            // a function of the ID, as with real objects
			batch = append(batch, m)
			w := want[m.id]
			w.id = m.id
			mergeMark(&w, m)
			want[m.id] = w
		}
		if err := s.add(batch); err != nil {
			t.Fatal(err)
		}
	}
	src, err := s.finish()
	if err != nil {
		t.Fatal(err)
	}
	if len(s.runs) > markFanIn {
		t.Fatalf("%d runs left after the merge passes", len(s.runs))
	}
	var got []markRec
	for {
		m, ok, err := src.next()
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			break
		}
		got = append(got, m)
	}
	wantS := slices.SortedFunc(maps.Values(want), cmpMark)
	if !slices.Equal(got, wantS) {
		t.Fatalf("merged %d records, want %d", len(got), len(wantS))
	}
	s.close()
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Fatalf("temporary files left: %v", ents)
	}
}

// TestListData: the parallel listing of data/ yields what one List does,
// in the same order, spilled or not, and skips foreign keys.
func TestListData(t *testing.T) {
	smallRuns(t, 100, 3, 4)
	ctx := context.Background()
	s := openStore(t, "file")
	r := newRepo(t, s, "")
	for i := range 300 {
		id := r.codec.hash([]byte(fmt.Sprint(i)))
		putObject(t, s, dataKey(id), bytes.Repeat([]byte{1}, i%17+1))
	}
	putObject(t, s, "data/zz/foreign", []byte("x"))
	putObject(t, s, "data/ab/notanid", []byte("x"))
	var want []dataObj
	for info, err := range s.List(ctx, "data/") {
		if err != nil {
			t.Fatal(err)
		}
		if id, ok := parseDataKey(info.Key); ok {
			want = append(want, dataObj{id: id, size: info.Size, mod: info.ModTime.UnixNano()})
		}
	}
	dir := t.TempDir()
	l, err := r.listData(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	var got []dataObj
	for {
		o, ok, err := l.next()
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			break
		}
		got = append(got, o)
	}
	l.close()
	if !slices.Equal(got, want) {
		t.Fatalf("listed %d objects, want %d", len(got), len(want))
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Fatalf("temporary files left: %v", ents)
	}
	// Closed early: no file stays either.
	l, err = r.listData(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := l.next(); err != nil {
		t.Fatal(err)
	}
	l.close()
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Fatalf("temporary files left after an early close: %v", ents)
	}
}

// TestCleanupSpilled: a cleanup whose marks and listing spill to many runs
// decides as one that holds them in memory, deletes only unreferenced
// objects, and leaves every remaining version restorable.
func TestCleanupSpilled(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, "file")
	r := newRepo(t, s, "pw")
	pool := blockPool(7, 40)
	var vs []*Version
	var images [][]byte
	for i := range 8 {
		img := blocksImage(pool, i, i+1, i+2, i*3%40, 39-i, (i*7)%40)
		images = append(images, img)
		vs = append(vs, backupBytes(t, r, fmt.Sprintf("vol%d", i%3), img, BackupOptions{}))
	}
	for _, v := range vs[:3] {
		if err := r.Remove(ctx, v.ID, RemoveOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	dir := t.TempDir()
	base, err := r.Cleanup(ctx, CleanupOptions{DryRun: true, Grace: -1, TempDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	smallRuns(t, 5, 2, 3)
	spilled, err := r.Cleanup(ctx, CleanupOptions{DryRun: true, Grace: -1, TempDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	base.Duration, spilled.Duration = 0, 0
	if fmt.Sprint(*base) != fmt.Sprint(*spilled) || base.Deleted == 0 {
		t.Fatalf("spilled dry run %+v, in memory %+v", spilled, base)
	}
	res, err := r.Cleanup(ctx, CleanupOptions{Grace: -1, TempDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if res.Deleted != base.Deleted || res.Referenced != base.Referenced {
		t.Fatalf("cleanup %+v, dry run %+v", res, base)
	}
	if n := countPrefix(t, s, "data/"); n != res.Objects-res.Deleted {
		t.Fatalf("%d objects left, want %d", n, res.Objects-res.Deleted)
	}
	for i, v := range vs[3:] {
		if got := restoreBytes(t, r, v.ID); !bytes.Equal(got, images[3+i]) {
			t.Fatalf("version %s restores wrong bytes after cleanup", v.ID)
		}
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Fatalf("temporary files left: %v", ents)
	}
	// A second cleanup finds nothing to do and keeps the compacted index.
	again, err := r.Cleanup(ctx, CleanupOptions{Grace: -1, TempDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if again.Deleted != 0 || again.Missing != 0 || again.IndexEntries != res.IndexEntries {
		t.Fatalf("second cleanup %+v after %+v", again, res)
	}
}

// TestScrubSpilled: a light scrub of objects marked in spilled runs and
// joined with the listing finds a missing and a truncated object, marks
// the versions that reference them, and a sampled scrub checks exactly its
// share.
func TestScrubSpilled(t *testing.T) {
	smallRuns(t, 4, 2, 3)
	old := scrubListThreshold
	scrubListThreshold = 2
	t.Cleanup(func() { scrubListThreshold = old })
	ctx := context.Background()
	s := openStore(t, "file")
	r := newRepo(t, s, "")
	pool := blockPool(9, 20)
	var vs []*Version
	for i := range 5 {
		vs = append(vs, backupBytes(t, r, "vol", blocksImage(pool, i, i+1, i+2, i+3), BackupOptions{}))
	}
	rep, err := r.Scrub(ctx, ScrubOptions{All: true, TempDir: t.TempDir()})
	if err != nil || !rep.OK() || rep.ObjectsChecked != 8 {
		t.Fatalf("clean scrub: %+v, %v", rep, err)
	}
	rep, err = r.Scrub(ctx, ScrubOptions{All: true, Percent: 50, TempDir: t.TempDir()})
	if err != nil || !rep.OK() || rep.ObjectsChecked != 4 {
		t.Fatalf("sampled scrub: %+v, %v", rep, err)
	}
	full, err := r.Version(ctx, vs[0].ID)
	if err != nil {
		t.Fatal(err)
	}
	missing, short := full.refs[0].ID, full.refs[3].ID // in vs[0] only; in vs[0..3]
	if err := s.Delete(ctx, dataKey(missing)); err != nil {
		t.Fatal(err)
	}
	b := getObject(t, s, dataKey(short))
	putObject(t, s, dataKey(short), b[:len(b)-1])
	rep, err = r.Scrub(ctx, ScrubOptions{All: true, TempDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(rep.Marked)
	want := []string{vs[0].ID, vs[1].ID, vs[2].ID, vs[3].ID}
	slices.Sort(want)
	if !slices.Equal(rep.Marked, want) || len(rep.Failures) != 5 || !rep.IndexRepaired {
		t.Fatalf("scrub of damage: marked %v (want %v), %d failures, index repaired %v", rep.Marked, want, len(rep.Failures), rep.IndexRepaired)
	}
}

// TestCleanupDamagedRefs: a framed manifest whose header reads but whose
// references are damaged stops a cleanup before it deletes anything.
func TestCleanupDamagedRefs(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, "mem")
	r := newRepo(t, s, "pw")
	pool := blockPool(3, 6)
	v1 := backupBytes(t, r, "vol", blocksImage(pool, 0, 1, 2), BackupOptions{})
	v2 := backupBytes(t, r, "vol", blocksImage(pool, 3, 4, 5), BackupOptions{})
	if err := r.Remove(ctx, v1.ID, RemoveOptions{}); err != nil {
		t.Fatal(err)
	}
	body := getObject(t, s, versionKey(v2.ID))
	body[len(body)-5] ^= 0x40
	putObject(t, s, versionKey(v2.ID), body)
	if vs, err := r.List(ctx, Filter{}); err != nil || len(vs) != 1 || vs[0].Status != StatusValid {
		t.Fatalf("the header no longer reads: %v, %v", vs, err)
	}
	before := countPrefix(t, s, "data/")
	if _, err := r.Cleanup(ctx, CleanupOptions{Grace: -1}); err == nil || !isDamage(err) {
		t.Fatalf("cleanup with a damaged refs frame: %v", err)
	}
	if n := countPrefix(t, s, "data/"); n != before {
		t.Fatalf("cleanup deleted %d objects before it stopped", before-n)
	}
	rep, err := r.Scrub(ctx, ScrubOptions{All: true})
	if err != nil || !slices.Contains(rep.DamagedVersions, v2.ID) {
		t.Fatalf("scrub: %+v, %v", rep, err)
	}
}

// TestCleanupNoTempDir: a cleanup and a scrub small enough to keep their
// runs, listing and decisions in memory need no temporary directory (a pod
// with a read-only root file system); larger ones say which directory
// failed.
func TestCleanupNoTempDir(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, "file")
	r := newRepo(t, s, "")
	pool := blockPool(8, 6)
	v1 := backupBytes(t, r, "vol", blocksImage(pool, 0, 1, 2), BackupOptions{})
	backupBytes(t, r, "vol", blocksImage(pool, 3, 4, 5), BackupOptions{})
	if err := r.Remove(ctx, v1.ID, RemoveOptions{}); err != nil {
		t.Fatal(err)
	}
	const nowhere = "/nonexistent/cairn-temp"
	if rep, err := r.Scrub(ctx, ScrubOptions{All: true, TempDir: nowhere}); err != nil || !rep.OK() {
		t.Fatalf("scrub without a temporary directory: %+v, %v", rep, err)
	}
	res, err := r.Cleanup(ctx, CleanupOptions{Grace: -1, TempDir: nowhere})
	if err != nil || res.Deleted != 3 {
		t.Fatalf("cleanup without a temporary directory: %+v, %v", res, err)
	}
	smallRuns(t, 2, 2, 2)
	backupBytes(t, r, "vol", blocksImage(pool, 0, 1, 2), BackupOptions{})
	if _, err := r.Cleanup(ctx, CleanupOptions{Grace: -1, TempDir: nowhere}); err == nil || !strings.Contains(err.Error(), nowhere) {
		t.Fatalf("spilling cleanup without a temporary directory: %v", err)
	}
}
