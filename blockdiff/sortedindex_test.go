package blockdiff

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"iter"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/objstore"
)

// TestSortedIndex: the index that cleanup, scrub and repair read in ID
// order (sortedIndex) is a generation of three packs (the third read into
// the first one's buffer) merged with uncompacted segments that went
// through sorted runs on local disk (one of them compressed, walked as a
// stream): each ID once, a segment's entry (stored size and length both)
// winning over the generation's, a damaged segment reported and adding
// nothing.
func TestSortedIndex(t *testing.T) {
	smallRuns(t, 1000, 100, 10) // no merge pass: every run stays on disk
	ctx := context.Background()
	s := openStore(t, "mem")
	r := newRepo(t, s, "pw")
	gen := sortedEntries(11, 2*packFrames*frameEntries+5*frameEntries+3) // three packs
	if _, err := r.writeCompactedIndex(ctx, seqOf(gen), compactOptions{}); err != nil {
		t.Fatal(err)
	}
	want := map[ID]indexEntry{}
	for _, e := range gen {
		want[e.ID] = e
	}
	// Two segments: new objects, and objects of the generation listed
	// again with other sizes (the segment's entry wins).
	extra := sortedEntries(12, 7000)
	var seg1, seg2 []indexEntry
	for i, e := range extra {
		e.Stored, e.Length = int64(1000+i), int64(2000+i)
		if i%2 == 0 {
			seg1 = append(seg1, e)
		} else {
			seg2 = append(seg2, e)
		}
		want[e.ID] = e
	}
	for i := 0; i < len(gen); i += 301 {
		e := gen[i]
		e.Stored, e.Length = e.Stored+7, e.Length+9
		seg2 = append(seg2, e)
		want[e.ID] = e
	}
	slices.Reverse(seg2)  // segments are in any order
	var seg3 []indexEntry // IDs that compress: the segment is stored with zstd
	for i := range 2000 {
		e := indexEntry{Stored: 5, Length: 6}
		e.ID[0], e.ID[30], e.ID[31] = 0xfe, byte(i>>8), byte(i)
		seg3 = append(seg3, e)
		want[e.ID] = e
	}
	for _, seg := range [][]indexEntry{seg1, seg2, seg3} {
		if err := r.writeIndex(ctx, seg); err != nil {
			t.Fatal(err)
		}
	}
	damagedKey := "index/" + strings.Repeat("d", 32)
	putObject(t, s, damagedKey, []byte("not a segment"))

	scan, err := r.scanIndex(ctx)
	if err != nil {
		t.Fatal(err)
	}
	zstds := 0
	sr, err := newSegmentReader()
	if err != nil {
		t.Fatal(err)
	}
	for i, key := range scan.segs {
		if err := sr.read(ctx, r, key, scan.segSizes[i]); err == nil && sr.zstd {
			zstds++
		}
	}
	sr.close()
	if zstds != 1 {
		t.Fatalf("%d compressed segments, want 1", zstds)
	}
	tmp := t.TempDir()
	idx, err := r.sortedIndex(ctx, scan, tmp)
	if err != nil {
		t.Fatal(err)
	}
	// The segments' 9,000+ entries went to runs of at most 1,000 on disk.
	if runs := countRuns(t, tmp); runs < 9 {
		t.Fatalf("%d runs on disk: the segments were not spilled", runs)
	}
	var got []indexEntry
	for {
		e, err, ok := idx.next()
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			break
		}
		got = append(got, e)
	}
	if d := idx.damaged(); !slices.Equal(d, []string{damagedKey}) {
		t.Fatalf("damaged %v, want %s", d, damagedKey)
	}
	idx.stop()
	if len(got) != len(want) {
		t.Fatalf("%d entries, want %d", len(got), len(want))
	}
	for i, e := range got {
		if i > 0 && compareID(got[i-1].ID, e.ID) >= 0 {
			t.Fatalf("entry %d out of order", i)
		}
		if w := want[e.ID]; e != w {
			t.Fatalf("entry %d: %+v, want %+v", i, e, w)
		}
	}
	if ents, _ := os.ReadDir(tmp); len(ents) != 0 {
		t.Fatalf("temporary files left: %v", ents)
	}
	// damagedIndex (repair's report) finds the same damage.
	if d, err := r.damagedIndex(ctx, scan); err != nil || !slices.Equal(d, []string{damagedKey}) {
		t.Fatalf("damagedIndex: %v, %v", d, err)
	}
}

// countRuns counts the run files of markSorters under dir.
func countRuns(t *testing.T, dir string) int {
	t.Helper()
	n := 0
	dirs, _ := os.ReadDir(dir)
	for _, d := range dirs {
		if d.IsDir() && strings.HasPrefix(d.Name(), "cairn-mark-") {
			files, _ := os.ReadDir(dir + "/" + d.Name())
			n += len(files)
		}
	}
	return n
}

// TestScrubIndexInRuns: a scrub reads uncompacted segments through sorted
// runs on local disk (not all in memory), and checks sizes against them: a
// segment written after the compaction that records another stored size
// than the object's wins over the generation's entry and makes the object
// damaged.
func TestScrubIndexInRuns(t *testing.T) {
	smallRuns(t, 4, 3, 3)
	old := scrubListThreshold
	scrubListThreshold = 2
	t.Cleanup(func() { scrubListThreshold = old })
	ctx := context.Background()
	s := openStore(t, "file")
	r := newRepo(t, s, "")
	pool := blockPool(21, 24)
	for i := range 4 {
		backupBytes(t, r, "vol", blocksImage(pool, 4*i, 4*i+1, 4*i+2, 4*i+3), BackupOptions{})
	}
	if _, err := r.Cleanup(ctx, CleanupOptions{Grace: -1, TempDir: t.TempDir()}); err != nil {
		t.Fatal(err)
	}
	v := backupBytes(t, r, "vol", blocksImage(pool, 16, 17, 18, 19, 20, 21, 0), BackupOptions{})
	full, err := r.Version(ctx, v.ID)
	if err != nil {
		t.Fatal(err)
	}
	target := full.refs[6].ID // pool[0]: in the generation
	info, err := s.Stat(ctx, dataKey(target))
	if err != nil {
		t.Fatal(err)
	}
	if err := r.writeIndex(ctx, []indexEntry{{ID: target, Stored: info.Size + 1, Length: testBS}}); err != nil {
		t.Fatal(err)
	}
	tmp := t.TempDir()
	maxRuns := 0
	rep, err := r.Scrub(ctx, ScrubOptions{All: true, TempDir: tmp, Progress: func(done, total int64) {
		if done == 1 {
			maxRuns = max(maxRuns, countRunDirs(tmp))
		}
	}})
	if err != nil {
		t.Fatal(err)
	}
	if maxRuns < 2 {
		t.Fatalf("%d run directories while checking: the index segments were read into memory", maxRuns)
	}
	if len(rep.Failures) != 2 { // the first backup's version and v reference pool[0]
		t.Fatalf("failures %+v", rep.Failures)
	}
	for _, f := range rep.Failures {
		if f.Problem != ProblemSize || f.Object != target.String() {
			t.Fatalf("failures %+v", rep.Failures)
		}
	}
}

// countRunDirs counts the markSorters' directories under dir.
func countRunDirs(dir string) int {
	n := 0
	dirs, _ := os.ReadDir(dir)
	for _, d := range dirs {
		if d.IsDir() && strings.HasPrefix(d.Name(), "cairn-mark-") {
			n++
		}
	}
	return n
}

// listCountStore counts the List iterations running at once.
type listCountStore struct {
	objstore.Store
	mu       sync.Mutex
	cur, max int
}

func (c *listCountStore) Unwrap() objstore.Store { return c.Store }

func (c *listCountStore) List(ctx context.Context, prefix string) iter.Seq2[objstore.ObjectInfo, error] {
	return func(yield func(objstore.ObjectInfo, error) bool) {
		c.mu.Lock()
		c.cur++
		c.max = max(c.max, c.cur)
		c.mu.Unlock()
		defer func() {
			c.mu.Lock()
			c.cur--
			c.mu.Unlock()
		}()
		time.Sleep(2 * time.Millisecond) // let the other listers start
		for info, err := range c.Store.List(ctx, prefix) {
			if !yield(info, err) {
				return
			}
		}
	}
}

// TestListDataConcurrency: data/ of a file store is listed 4 prefixes at a
// time (its List reads a whole folder), of another store 16 at a time.
func TestListDataConcurrency(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		kind string
		want int
	}{{"file", listConcurrencyLocal}, {"mem", listConcurrency}} {
		c := &listCountStore{Store: openStore(t, tc.kind)}
		if localStore(c) != (tc.kind == "file") {
			t.Fatalf("%s: localStore %v", tc.kind, localStore(c))
		}
		r := newRepo(t, c, "")
		for i := range 600 {
			putObject(t, c, dataKey(r.codec.hash([]byte(fmt.Sprint(i)))), []byte{1})
		}
		l, err := r.listData(ctx, t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for {
			_, ok, err := l.next()
			if err != nil {
				t.Fatal(err)
			}
			if !ok {
				break
			}
			if n++; n == 1 {
				time.Sleep(50 * time.Millisecond) // the listers run ahead of a slow consumer
			}
		}
		l.close()
		if n != 600 || c.max != tc.want {
			t.Fatalf("%s: %d objects listed, %d prefixes at once, want %d", tc.kind, n, c.max, tc.want)
		}
	}
}

// TestWalkIndexStream: the streaming decoder of a segment's plaintext
// yields what decodeIndex does, and refuses what it refuses (a changed
// byte anywhere, a truncation, trailing bytes), with ErrCorrupt.
func TestWalkIndexStream(t *testing.T) {
	es := sortedEntries(31, 3000)
	plain := encodeIndex(es)
	walk := func(b []byte) ([]indexEntry, error) {
		var got []indexEntry
		err := walkIndexStream(bytes.NewReader(b), func(e indexEntry) error {
			got = append(got, e)
			return nil
		})
		return got, err
	}
	got, err := walk(plain)
	if err != nil || !slices.Equal(got, es) {
		t.Fatalf("%d entries, %v", len(got), err)
	}
	for _, bad := range [][]byte{
		plain[:len(plain)-1],
		plain[:100],
		append(slices.Clone(plain), 0),
		nil,
	} {
		if _, err := walk(bad); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("%d bytes: %v", len(bad), err)
		}
	}
	for i := 0; i < len(plain); i += 977 {
		b := slices.Clone(plain)
		b[i] ^= 0x10
		_, err := walk(b)
		if _, derr := decodeIndex(b); (err == nil) != (derr == nil) || err != nil && !isDamage(err) {
			t.Fatalf("byte %d changed: stream %v, decodeIndex %v", i, err, derr)
		}
		if err == nil {
			t.Fatalf("byte %d changed: accepted", i)
		}
	}
}
