// Package storetest is the conformance suite that every objstore backend runs.
//
// A backend's test calls Run with a function that returns a new, empty store
// for each subtest:
//
//	func TestConformance(t *testing.T) {
//		storetest.Run(t, func(t *testing.T) objstore.Store {
//			s, err := objstore.Open(t.Context(), "file://"+t.TempDir())
//			if err != nil {
//				t.Fatal(err)
//			}
//			t.Cleanup(func() { s.Close() })
//			return s
//		})
//	}
package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/objstore"
)

// BigSize is the size of the large objects the suite writes: above the
// multipart threshold of the S3 backend when it is opened with a part size of
// 5 MiB (its minimum), and not a multiple of it.
const BigSize = 12<<20 + 12345

// NewStore returns a new, empty store for one subtest; it registers its own
// cleanup with t.
type NewStore func(t *testing.T) objstore.Store

// Run runs the whole conformance suite, each case as a subtest with a store
// from newStore.
func Run(t *testing.T, newStore NewStore) {
	for _, c := range Cases() {
		t.Run(c.Name, func(t *testing.T) { c.F(t, newStore(t)) })
	}
}

// Case is one conformance check.
type Case struct {
	Name string                               // the subtest's name
	F    func(t *testing.T, s objstore.Store) // the check, given a new, empty store
}

// Cases returns the checks that Run runs, for backends that need to run them
// selectively (the fault-injection tests run them one by one).
func Cases() []Case {
	return []Case{
		{"RoundTrip", testRoundTrip},
		{"Ranges", testRanges},
		{"Missing", testMissing},
		{"InvalidKeys", testInvalidKeys},
		{"SizeMismatch", testSizeMismatch},
		{"List", testList},
		{"ListPagination", testListPagination},
		{"ListBreak", testListBreak},
		{"Overwrite", testOverwrite},
		{"ConcurrentWriters", testConcurrentWriters},
		{"CreateRace", testCreateRace},
		{"Cancel", testCancel},
	}
}

// data returns n pseudo-random bytes determined by seed.
func data(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, n)
	for i := 0; i < n; i += 8 {
		v := r.Uint64()
		for j := 0; j < 8 && i+j < n; j++ {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	return b
}

// opaque hides a reader's other methods (Len, Seek, WriterTo) so that
// backends cannot take shortcuts.
type opaque struct{ r io.Reader }

func (o opaque) Read(p []byte) (int, error) { return o.r.Read(p) }

func put(t *testing.T, s objstore.Store, key string, b []byte) {
	t.Helper()
	if err := s.Put(t.Context(), key, bytes.NewReader(b), int64(len(b))); err != nil {
		t.Fatalf("Put(%q, %d bytes): %v", key, len(b), err)
	}
}

func get(t *testing.T, s objstore.Store, key string, off, n int64) []byte {
	t.Helper()
	rc, err := s.Get(t.Context(), key, off, n)
	if err != nil {
		t.Fatalf("Get(%q, %d, %d): %v", key, off, n, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("Get(%q, %d, %d): reading: %v", key, off, n, err)
	}
	return b
}

func mustEqual(t *testing.T, what string, got, want []byte) {
	t.Helper()
	if !bytes.Equal(got, want) {
		i := 0
		for i < len(got) && i < len(want) && got[i] == want[i] {
			i++
		}
		t.Fatalf("%s: got %d bytes, want %d; first difference at byte %d", what, len(got), len(want), i)
	}
}

func list(t *testing.T, s objstore.Store, prefix string) []objstore.ObjectInfo {
	t.Helper()
	var infos []objstore.ObjectInfo
	for info, err := range s.List(t.Context(), prefix) {
		if err != nil {
			t.Fatalf("List(%q): %v", prefix, err)
		}
		infos = append(infos, info)
	}
	return infos
}

func keysOf(infos []objstore.ObjectInfo) []string {
	keys := make([]string, len(infos))
	for i, info := range infos {
		keys[i] = info.Key
	}
	return keys
}

func testRoundTrip(t *testing.T, s objstore.Store) {
	for i, n := range []int{0, 1, 1000, 1 << 20, BigSize} {
		for _, known := range []bool{true, false} {
			key := fmt.Sprintf("rt/%d-%v", n, known)
			want := data(n, uint64(i))
			size := int64(n)
			var r io.Reader = opaque{bytes.NewReader(want)}
			if !known {
				size = -1
			}
			if err := s.Put(t.Context(), key, r, size); err != nil {
				t.Fatalf("Put(%q, size %d): %v", key, size, err)
			}
			mustEqual(t, "Get "+key, get(t, s, key, 0, -1), want)
			info, err := s.Stat(t.Context(), key)
			if err != nil {
				t.Fatalf("Stat(%q): %v", key, err)
			}
			if info.Key != key || info.Size != int64(n) {
				t.Fatalf("Stat(%q) = %+v, want key %q size %d", key, info, key, n)
			}
			if d := time.Since(info.ModTime); d > 24*time.Hour || d < -24*time.Hour {
				t.Errorf("Stat(%q).ModTime = %v, far from now", key, info.ModTime)
			}
		}
	}
}

func testRanges(t *testing.T, s objstore.Store) {
	want := data(1000, 7)
	put(t, s, "r", want)
	for _, c := range []struct{ off, n int64 }{
		{0, -1}, {0, 1000}, {0, 10}, {0, 0}, {1, 1}, {100, 200}, {500, -1},
		{990, -1}, {990, 100}, {999, 1}, {1000, -1}, {1000, 10}, {1500, -1}, {1500, 10},
	} {
		lo, hi := min(c.off, 1000), int64(1000)
		if c.n >= 0 {
			hi = min(c.off+c.n, 1000)
		}
		mustEqual(t, fmt.Sprintf("Get(r, %d, %d)", c.off, c.n), get(t, s, "r", c.off, c.n), want[lo:hi])
	}
	// A range in a large object, across the boundaries of 5 MiB parts.
	big := data(BigSize, 8)
	put(t, s, "big", big)
	for _, c := range []struct{ off, n int64 }{{5<<20 - 10, 20}, {0, 1}, {BigSize - 5, -1}, {10 << 20, 3 << 20}} {
		hi := BigSize
		if c.n >= 0 {
			hi = int(min(c.off+c.n, BigSize))
		}
		mustEqual(t, fmt.Sprintf("Get(big, %d, %d)", c.off, c.n), get(t, s, "big", c.off, c.n), big[c.off:hi])
	}
	// The empty object: every range is empty.
	put(t, s, "empty", nil)
	for _, c := range []struct{ off, n int64 }{{0, -1}, {0, 10}, {5, -1}} {
		mustEqual(t, fmt.Sprintf("Get(empty, %d, %d)", c.off, c.n), get(t, s, "empty", c.off, c.n), nil)
	}
	if rc, err := s.Get(t.Context(), "r", -1, 10); err == nil {
		rc.Close()
		t.Errorf("Get with a negative offset: no error")
	}
}

func testMissing(t *testing.T, s objstore.Store) {
	ctx := t.Context()
	put(t, s, "present/x", []byte("x"))
	for _, key := range []string{"missing", "present/missing", "present", "missing/deeper/still"} {
		if rc, err := s.Get(ctx, key, 0, -1); !errors.Is(err, objstore.ErrNotExist) {
			if err == nil {
				rc.Close()
			}
			t.Errorf("Get(%q) = %v, want ErrNotExist", key, err)
		} else if !strings.Contains(err.Error(), key) {
			t.Errorf("Get(%q) error %q does not name the key", key, err)
		}
		if rc, err := s.Get(ctx, key, 3, 5); !errors.Is(err, objstore.ErrNotExist) {
			if err == nil {
				rc.Close()
			}
			t.Errorf("Get(%q, 3, 5) = %v, want ErrNotExist", key, err)
		}
		if _, err := s.Stat(ctx, key); !errors.Is(err, objstore.ErrNotExist) {
			t.Errorf("Stat(%q) = %v, want ErrNotExist", key, err)
		}
		if err := s.Delete(ctx, key); err != nil {
			t.Errorf("Delete(%q) of a missing key = %v, want nil", key, err)
		}
	}
	if err := s.Delete(ctx, "present/x"); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if _, err := s.Stat(ctx, "present/x"); !errors.Is(err, objstore.ErrNotExist) {
		t.Errorf("Stat after Delete = %v, want ErrNotExist", err)
	}
	if err := s.Delete(ctx, "present/x"); err != nil {
		t.Errorf("second Delete = %v, want nil", err)
	}
	if got := list(t, s, ""); len(got) != 0 {
		t.Errorf("List after deleting everything = %v", keysOf(got))
	}
}

// BadKeys are keys that every backend must reject with objstore.ErrInvalidKey.
var BadKeys = []string{
	"", "/", "/abs", "trailing/", "a//b", ".", "..", "../escape", "a/../../b",
	"a/./b", "a/..", "nul\x00byte", "ctl\x01", "tab\tkey", "\xff\xfe", strings.Repeat("k", objstore.MaxKeyLen+1),
}

func testInvalidKeys(t *testing.T, s objstore.Store) {
	ctx := t.Context()
	for _, key := range BadKeys {
		errs := map[string]error{
			"Put":    s.Put(ctx, key, strings.NewReader("x"), 1),
			"Create": s.Create(ctx, key, strings.NewReader("x"), 1),
			"Delete": s.Delete(ctx, key),
		}
		_, errs["Stat"] = s.Stat(ctx, key)
		rc, err := s.Get(ctx, key, 0, -1)
		if err == nil {
			rc.Close()
		}
		errs["Get"] = err
		for op, err := range errs {
			if !errors.Is(err, objstore.ErrInvalidKey) {
				t.Errorf("%s(%q) = %v, want ErrInvalidKey", op, key, err)
			}
		}
	}
	if got := list(t, s, ""); len(got) != 0 {
		t.Errorf("bad keys left objects: %v", keysOf(got))
	}
	// Prefixes are not keys: odd ones just match nothing.
	for _, p := range []string{"..", "../", "/", "a//", "\x00"} {
		if got := list(t, s, p); len(got) != 0 {
			t.Errorf("List(%q) = %v, want nothing", p, keysOf(got))
		}
	}
}

func testSizeMismatch(t *testing.T, s objstore.Store) {
	ctx := t.Context()
	put(t, s, "old", []byte("old"))
	for _, c := range []struct {
		key  string
		body []byte
		size int64
	}{{"short", data(5, 1), 10}, {"long", data(20, 2), 10}, {"old", data(5, 3), 10}, {"old", data(20, 4), 10}} {
		err := s.Put(ctx, c.key, opaque{bytes.NewReader(c.body)}, c.size)
		if err == nil {
			t.Errorf("Put(%q) of %d bytes announced as %d: no error", c.key, len(c.body), c.size)
		}
	}
	for _, key := range []string{"short", "long"} {
		if _, err := s.Stat(ctx, key); !errors.Is(err, objstore.ErrNotExist) {
			t.Errorf("Stat(%q) after a failed Put = %v, want ErrNotExist", key, err)
		}
	}
	mustEqual(t, "old after failed overwrites", get(t, s, "old", 0, -1), []byte("old"))
}

// ListKeys are the keys the List check stores: slashes, unicode, and
// neighbours whose order depends on comparing '/' with other bytes. No key is
// also a folder of others ("a" and "a/b"), which the fs backend cannot hold.
var ListKeys = []string{
	"a-c", "a.b", "a/b/c", "a/b/d", "a/bc", "a/b-", "a0", "b",
	"data/00/one", "data/00/two", "data/ff/three", "data/0f",
	"ünïcödé/ключ", "日本/語/ファイル", "z~", "Zed", "space key/with spaces",
	"a/bz/c/d/e/f/g/h/deep",
	"sym/plus+sign", "sym/pct%25", "sym/q?x=1&y", "sym/hash#frag", "sym/'quote\"", "sym/<xml>&amp;", "sym/emoji-🧱", "sym/back\\slash",
}

func testList(t *testing.T, s objstore.Store) {
	for i, k := range ListKeys {
		put(t, s, k, data(i, uint64(i)))
	}
	for i, k := range ListKeys {
		mustEqual(t, "Get "+k, get(t, s, k, 0, -1), data(i, uint64(i)))
	}
	sorted := slices.Clone(ListKeys)
	slices.Sort(sorted)
	for _, prefix := range []string{"", "a", "a/", "a/b", "a/b/", "a/b/c", "data/0", "data/00/", "ü", "日本/", "zz", "nothing/", "Z", "sym/", "sym/p", "sym/q?"} {
		var want []string
		for _, k := range sorted {
			if strings.HasPrefix(k, prefix) {
				want = append(want, k)
			}
		}
		infos := list(t, s, prefix)
		if got := keysOf(infos); !slices.Equal(got, want) {
			t.Errorf("List(%q)\n got %q\nwant %q", prefix, got, want)
		}
		for _, info := range infos {
			i := slices.Index(ListKeys, info.Key)
			if info.Size != int64(i) {
				t.Errorf("List(%q): %q has size %d, want %d", prefix, info.Key, info.Size, i)
			}
		}
	}
}

// PaginationKeys is how many keys the pagination check stores: more than the
// 1000 that S3 returns per page.
const PaginationKeys = 1100

func testListPagination(t *testing.T, s objstore.Store) {
	var want []string
	for i := range PaginationKeys {
		want = append(want, fmt.Sprintf("p/%02x/%05d", i%7, i))
	}
	keys := make(chan string)
	var wg sync.WaitGroup
	var failed atomic.Bool
	for range 16 {
		wg.Go(func() {
			for k := range keys {
				if err := s.Put(t.Context(), k, strings.NewReader(k), int64(len(k))); err != nil {
					if !failed.Swap(true) {
						t.Errorf("Put(%q): %v", k, err)
					}
				}
			}
		})
	}
	for _, k := range want {
		keys <- k
	}
	close(keys)
	wg.Wait()
	if failed.Load() {
		t.FailNow()
	}
	put(t, s, "q", []byte("outside the prefix"))
	slices.Sort(want)
	if got := keysOf(list(t, s, "p/")); !slices.Equal(got, want) {
		t.Fatalf("List(p/) returned %d keys, want %d (equal sets and order: %v)", len(got), len(want), slices.Equal(got, want))
	}
	var want3 []string
	for _, k := range want {
		if strings.HasPrefix(k, "p/03/") {
			want3 = append(want3, k)
		}
	}
	if got := keysOf(list(t, s, "p/03/")); !slices.Equal(got, want3) {
		t.Fatalf("List(p/03/) returned %d keys, want %d", len(got), len(want3))
	}
	if n := len(list(t, s, "")); n != PaginationKeys+1 {
		t.Fatalf("List() returned %d keys, want %d", n, PaginationKeys+1)
	}
}

func testListBreak(t *testing.T, s objstore.Store) {
	for i := range 10 {
		put(t, s, fmt.Sprintf("k/%d", i), nil)
	}
	n := 0
	for _, err := range s.List(t.Context(), "k/") {
		if err != nil {
			t.Fatal(err)
		}
		if n++; n == 3 {
			break
		}
	}
	if n != 3 {
		t.Fatalf("iterated %d times, want 3", n)
	}
}

func testOverwrite(t *testing.T, s objstore.Store) {
	a, b := data(3000, 1), data(100, 2)
	put(t, s, "o/k", a)
	put(t, s, "o/k", b)
	mustEqual(t, "after overwrite", get(t, s, "o/k", 0, -1), b)
	if info, err := s.Stat(t.Context(), "o/k"); err != nil || info.Size != 100 {
		t.Fatalf("Stat after overwrite = %+v, %v; want size 100", info, err)
	}
	put(t, s, "o/k", nil)
	mustEqual(t, "after overwrite with empty", get(t, s, "o/k", 0, -1), nil)
	if got := keysOf(list(t, s, "")); !slices.Equal(got, []string{"o/k"}) {
		t.Fatalf("List after overwrites = %q", got)
	}
}

func testConcurrentWriters(t *testing.T, s objstore.Store) {
	const writers, rounds = 8, 5
	variants := make([][]byte, writers)
	for i := range variants {
		variants[i] = data(64<<10+i*1000, uint64(100+i))
	}
	put(t, s, "shared", variants[0])
	var wg sync.WaitGroup
	stop := make(chan struct{})
	errc := make(chan error, 2*writers+1)
	for w := range writers {
		wg.Go(func() {
			for r := range rounds {
				if err := s.Put(t.Context(), "shared", bytes.NewReader(variants[w]), int64(len(variants[w]))); err != nil {
					errc <- err
					return
				}
				own := fmt.Sprintf("own/%d/%d", w, r)
				if err := s.Put(t.Context(), own, bytes.NewReader(variants[w]), int64(len(variants[w]))); err != nil {
					errc <- err
					return
				}
			}
		})
	}
	var readers sync.WaitGroup
	readers.Go(func() { // a reader sees one whole variant, never a mix or a part
		for {
			select {
			case <-stop:
				return
			default:
			}
			rc, err := s.Get(t.Context(), "shared", 0, -1)
			if err != nil {
				errc <- err
				return
			}
			b, err := io.ReadAll(rc)
			rc.Close()
			if err != nil {
				errc <- err
				return
			}
			if !slices.ContainsFunc(variants, func(v []byte) bool { return bytes.Equal(v, b) }) {
				errc <- fmt.Errorf("a reader saw %d bytes that are no variant written", len(b))
				return
			}
		}
	})
	wg.Wait()
	close(stop)
	readers.Wait()
	close(errc)
	for err := range errc {
		t.Error(err)
	}
	got := get(t, s, "shared", 0, -1)
	if !slices.ContainsFunc(variants, func(v []byte) bool { return bytes.Equal(v, got) }) {
		t.Fatalf("final object (%d bytes) is no variant written", len(got))
	}
	if n := len(list(t, s, "own/")); n != writers*rounds {
		t.Fatalf("List(own/) = %d objects, want %d", n, writers*rounds)
	}
}

func testCreateRace(t *testing.T, s objstore.Store) {
	ctx := t.Context()
	const racers = 8
	var wg sync.WaitGroup
	errs := make([]error, racers)
	for i := range racers {
		wg.Go(func() {
			b := []byte(fmt.Sprintf("racer %d", i))
			errs[i] = s.Create(ctx, "lock", bytes.NewReader(b), int64(len(b)))
		})
	}
	wg.Wait()
	if slices.ContainsFunc(errs, func(err error) bool { return errors.Is(err, objstore.ErrNotSupported) }) {
		for i, err := range errs {
			if !errors.Is(err, objstore.ErrNotSupported) {
				t.Errorf("racer %d: %v; others got ErrNotSupported, so all must", i, err)
			}
		}
		if _, err := s.Stat(ctx, "lock"); !errors.Is(err, objstore.ErrNotExist) {
			t.Errorf("Create said ErrNotSupported but stored something: Stat = %v", err)
		}
		t.Logf("backend does not support Create: %v", errs[0])
		return
	}
	winner := -1
	for i, err := range errs {
		switch {
		case err == nil && winner >= 0:
			t.Errorf("racers %d and %d both won", winner, i)
		case err == nil:
			winner = i
		case !errors.Is(err, objstore.ErrExist):
			t.Errorf("racer %d: %v, want nil or ErrExist", i, err)
		}
	}
	if winner < 0 {
		t.Fatalf("no racer won: %v", errs)
	}
	mustEqual(t, "the winner's object", get(t, s, "lock", 0, -1), []byte(fmt.Sprintf("racer %d", winner)))
	if err := s.Create(ctx, "lock", strings.NewReader("late"), 4); !errors.Is(err, objstore.ErrExist) {
		t.Errorf("Create of an existing key = %v, want ErrExist", err)
	}
	mustEqual(t, "after a losing Create", get(t, s, "lock", 0, -1), []byte(fmt.Sprintf("racer %d", winner)))
	if err := s.Delete(ctx, "lock"); err != nil {
		t.Fatal(err)
	}
	if err := s.Create(ctx, "lock", strings.NewReader("again"), -1); err != nil {
		t.Errorf("Create after Delete = %v", err)
	}
	mustEqual(t, "after re-Create", get(t, s, "lock", 0, -1), []byte("again"))
	big := data(BigSize, 9)
	switch err := s.Create(ctx, "big", bytes.NewReader(big), int64(len(big))); {
	case err == nil:
		mustEqual(t, "big Create", get(t, s, "big", 0, -1), big)
	case errors.Is(err, objstore.ErrNotSupported):
		if _, err := s.Stat(ctx, "big"); !errors.Is(err, objstore.ErrNotExist) {
			t.Errorf("big Create said ErrNotSupported but stored something: Stat = %v", err)
		}
	default:
		t.Errorf("big Create: %v", err)
	}
}

// cancelReader yields n bytes, then cancels its context and keeps yielding.
type cancelReader struct {
	n      int
	cancel context.CancelFunc
}

func (c *cancelReader) Read(p []byte) (int, error) {
	if c.n <= 0 {
		c.cancel()
		time.Sleep(time.Millisecond)
	}
	k := min(len(p), max(c.n, 1))
	clear(p[:k])
	c.n -= k
	return k, nil
}

func testCancel(t *testing.T, s objstore.Store) {
	put(t, s, "c/old", []byte("old"))
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	checks := map[string]error{
		"Put":    s.Put(ctx, "c/new", strings.NewReader("x"), 1),
		"Create": s.Create(ctx, "c/new2", strings.NewReader("x"), 1),
		"Delete": s.Delete(ctx, "c/old"),
	}
	_, checks["Stat"] = s.Stat(ctx, "c/old")
	rc, err := s.Get(ctx, "c/old", 0, -1)
	if err == nil {
		// A backend may hand out the reader and fail on Read instead.
		_, err = io.ReadAll(rc)
		rc.Close()
	}
	checks["Get"] = err
	for _, err := range s.List(ctx, "") {
		checks["List"] = err
		break
	}
	for op, err := range checks {
		if !errors.Is(err, context.Canceled) {
			t.Errorf("%s with a cancelled context = %v, want context.Canceled", op, err)
		}
	}
	// Cancelled in the middle of a large upload: the old object stays whole.
	for _, size := range []int64{BigSize, -1} {
		ctx, cancel := context.WithCancel(t.Context())
		err := s.Put(ctx, "c/old", &cancelReader{n: 6 << 20, cancel: cancel}, size)
		cancel()
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Put (size %d) cancelled midway = %v, want context.Canceled", size, err)
		}
		mustEqual(t, "after a cancelled overwrite", get(t, s, "c/old", 0, -1), []byte("old"))
		if _, err := s.Stat(t.Context(), "c/new"); !errors.Is(err, objstore.ErrNotExist) {
			t.Errorf("Stat(c/new) = %v, want ErrNotExist", err)
		}
	}
	if got := keysOf(list(t, s, "")); !slices.Equal(got, []string{"c/old"}) {
		t.Errorf("List after cancelled writes = %q, want [c/old]", got)
	}
}
