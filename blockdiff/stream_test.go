package blockdiff

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"runtime"
	"runtime/debug"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	chunkers "github.com/PlakarKorp/go-cdc-chunkers"
	_ "github.com/PlakarKorp/go-cdc-chunkers/chunkers/fastcdc" // the reference
	"github.com/cairn-backup/cairn/objstore"
)

// testChunker keeps stream tests small: 4 KiB min, 16 KiB average, 64 KiB max.
var testChunker = ChunkerParams{Algorithm: ChunkerFastCDC, Min: 4 << 10, Avg: 16 << 10, Max: 64 << 10}

// newStreamRepo initialises a repository with the test chunker.
func newStreamRepo(t testing.TB, s objstore.Store, pass string) *Repository {
	t.Helper()
	ic := InitConfig{BlockSize: testBS, Chunker: &testChunker}
	opts := Options{}
	if pass != "" {
		ic.Encrypt, ic.KDF, opts.Passphrase = true, testKDF, []byte(pass)
	}
	r, err := Init(context.Background(), s, ic, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// dumpLike returns n bytes that look like a SQL dump: numbered rows of words.
func dumpLike(seed uint64, n int) []byte {
	words := []string{"alpha", "beta", "gamma", "delta", "cairn", "pgbench", "account", "branch"}
	r := rand.New(rand.NewPCG(seed, 3))
	var b bytes.Buffer
	for row := 0; b.Len() < n; row++ {
		b.WriteString(strings.Repeat(" ", r.IntN(3)))
		b.WriteString(words[r.IntN(len(words))])
		b.WriteByte('\t')
		b.WriteString(string(rune('0' + row%10)))
		b.WriteString(strings.Repeat(words[r.IntN(len(words))], 1+r.IntN(4)))
		b.WriteByte('\t')
		b.WriteString(time.Unix(int64(r.Uint32()), 0).UTC().Format(time.RFC3339))
		b.WriteByte('\n')
	}
	return b.Bytes()[:n]
}

func restoreStreamBytes(t testing.TB, r *Repository, id string) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := r.RestoreStream(context.Background(), id, &buf, StreamRestoreOptions{}); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestStreamRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		name, store, pass string
		data              []byte
	}{
		{"empty", "mem", "", nil},
		{"tiny", "mem", "", []byte("x")},
		{"text", "mem", "", dumpLike(1, 3<<20+17)},
		{"random", "file", "", randBytes(2, 1<<20+5)},
		{"zeros", "mem", "", make([]byte, 300<<10)},
		{"encrypted", "mem", "pw", dumpLike(3, 1<<20)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newStreamRepo(t, openStore(t, tc.store), tc.pass)
			var progress int64
			v, err := r.BackupStream(context.Background(), bytes.NewReader(tc.data),
				StreamOptions{Volume: "pg-main", Labels: map[string]string{"cluster": "main"}, Progress: func(d int64) { progress = d }})
			if err != nil {
				t.Fatal(err)
			}
			if v.Kind != KindStream || v.Status != StatusValid || v.Size != int64(len(tc.data)) || progress != v.Size {
				t.Fatalf("version %+v, progress %d; want a valid stream of %d bytes", v, progress, len(tc.data))
			}
			var total int64
			for _, ref := range v.Refs() {
				if ref.Length > int64(testChunker.Max) {
					t.Fatalf("chunk of %d bytes exceeds max %d", ref.Length, testChunker.Max)
				}
				total += ref.Length
			}
			if total != v.Size {
				t.Fatalf("refs cover %d bytes, size %d", total, v.Size)
			}
			reread, err := r.Version(context.Background(), v.ID)
			if err != nil || reread.Kind != KindStream || len(reread.Refs()) != len(v.Refs()) {
				t.Fatalf("reread %+v, %v", reread, err)
			}
			if got := restoreStreamBytes(t, r, v.ID); !bytes.Equal(got, tc.data) {
				t.Fatalf("restored %d bytes differ from the %d backed up", len(got), len(tc.data))
			}
			// The block restore path (WriterAt) reads streams too.
			if len(tc.data) > 0 {
				if got := restoreBytes(t, r, v.ID); !bytes.Equal(got, tc.data) {
					t.Fatal("RestoreFile of a stream differs")
				}
			}
		})
	}
}

// A stream that changed in a few places stores little: chunk boundaries
// resynchronise after each edit.
func TestStreamDedup(t *testing.T) {
	r := newStreamRepo(t, openStore(t, "mem"), "")
	day1 := dumpLike(7, 8<<20)
	v1, err := r.BackupStream(context.Background(), bytes.NewReader(day1), StreamOptions{Volume: "db"})
	if err != nil {
		t.Fatal(err)
	}
	// Day 2: ten edits that change lengths (inserts and deletes) spread out.
	day2 := bytes.Clone(day1)
	for i := range 10 {
		off := (i*2 + 1) * len(day2) / 21
		if i%2 == 0 {
			day2 = append(day2[:off], append([]byte("INSERTED ROW\n"), day2[off:]...)...)
		} else {
			day2 = append(day2[:off], day2[off+50:]...)
		}
	}
	v2, err := r.BackupStream(context.Background(), bytes.NewReader(day2), StreamOptions{Volume: "db"})
	if err != nil {
		t.Fatal(err)
	}
	// Each edit costs about two chunks (16 KiB average): 10 edits ~ 320 KiB
	// of 8 MiB; allow 10%.
	newPlain := int64(0)
	ids := map[ID]bool{}
	for _, ref := range v1.Refs() {
		ids[ref.ID] = true
	}
	for _, ref := range v2.Refs() {
		if !ids[ref.ID] {
			newPlain += ref.Length
		}
	}
	t.Logf("day 1: %d bytes, %d chunks, %d stored; day 2: %d new plaintext bytes, %d stored, %d chunks new of %d",
		v1.Size, len(v1.Refs()), v1.Stats.BytesWritten, newPlain, v2.Stats.BytesWritten, v2.Stats.BlocksNew, v2.Stats.BlocksTotal)
	if newPlain > v2.Size/10 {
		t.Fatalf("day 2 stored %d new plaintext bytes of %d: chunking does not resynchronise", newPlain, v2.Size)
	}
	if v2.Stats.BlocksNew+v2.Stats.BlocksDeduped+v2.Stats.BlocksSparse != v2.Stats.BlocksTotal {
		t.Fatalf("stats do not add up: %+v", v2.Stats)
	}
	if got := restoreStreamBytes(t, r, v2.ID); !bytes.Equal(got, day2) {
		t.Fatal("day 2 restore differs")
	}
	// The same stream again stores nothing.
	v3, err := r.BackupStream(context.Background(), bytes.NewReader(day2), StreamOptions{Volume: "db"})
	if err != nil {
		t.Fatal(err)
	}
	if v3.Stats.BytesWritten != 0 || v3.Stats.BlocksNew != 0 {
		t.Fatalf("identical stream stored %d bytes", v3.Stats.BytesWritten)
	}
}

// errReader yields n bytes of data and then fails.
type errReader struct {
	data []byte
	err  error
}

func (e *errReader) Read(p []byte) (int, error) {
	if len(e.data) == 0 {
		return 0, e.err
	}
	n := copy(p, e.data)
	e.data = e.data[n:]
	return n, nil
}

func TestStreamReaderErrorLeavesNoValidVersion(t *testing.T) {
	r := newStreamRepo(t, openStore(t, "mem"), "")
	cause := errors.New("pg_dumpall: server closed the connection")
	_, err := r.BackupStream(context.Background(), &errReader{data: dumpLike(4, 1<<20), err: cause}, StreamOptions{Volume: "db"})
	if !errors.Is(err, cause) {
		t.Fatalf("err = %v, want the reader's error wrapped", err)
	}
	vs, err := r.List(context.Background(), Filter{Volume: "db"})
	if err != nil {
		t.Fatal(err)
	}
	if len(vs) != 1 || vs[0].Status != StatusFailed || !strings.Contains(vs[0].Error, cause.Error()) {
		t.Fatalf("versions after a failed stream: %+v", vs)
	}
	if err := r.RestoreStream(context.Background(), vs[0].ID, io.Discard, StreamRestoreOptions{}); !errors.Is(err, ErrNotValid) {
		t.Fatalf("restore of an invalid version: %v", err)
	}
	// The chunks that were stored are indexed: the next backup reuses them.
	v, err := r.BackupStream(context.Background(), bytes.NewReader(dumpLike(4, 1<<20)), StreamOptions{Volume: "db"})
	if err != nil {
		t.Fatal(err)
	}
	if v.Stats.BlocksDeduped == 0 {
		t.Fatalf("retry deduplicated nothing: %+v", v.Stats)
	}
}

// slowReader blocks between reads until its context ends.
type slowReader struct {
	ctx  context.Context
	data []byte
}

func (s *slowReader) Read(p []byte) (int, error) {
	if len(s.data) == 0 {
		<-s.ctx.Done()
		return 0, syscall.EPIPE
	}
	n := copy(p, s.data[:min(len(s.data), 4096)])
	s.data = s.data[n:]
	return n, nil
}

func TestStreamCancel(t *testing.T) {
	r := newStreamRepo(t, openStore(t, "mem"), "")
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(100*time.Millisecond, cancel)
	_, err := r.BackupStream(ctx, &slowReader{ctx: ctx, data: dumpLike(5, 512<<10)}, StreamOptions{Volume: "db"})
	if err == nil {
		t.Fatal("cancelled backup succeeded")
	}
	vs, _ := r.List(context.Background(), Filter{})
	for _, v := range vs {
		if v.Status == StatusValid {
			t.Fatalf("a cancelled backup left a valid version: %+v", v)
		}
	}
}

func TestStreamRestoreDetectsCorruption(t *testing.T) {
	s := openStore(t, "mem")
	r := newStreamRepo(t, s, "")
	data := dumpLike(6, 1<<20)
	v, err := r.BackupStream(context.Background(), bytes.NewReader(data), StreamOptions{Volume: "db"})
	if err != nil {
		t.Fatal(err)
	}
	victim := v.Refs()[len(v.Refs())/2].ID
	other := v.Refs()[0].ID
	body := allObjects(t, s)[dataKey(other)]
	if err := s.Put(context.Background(), dataKey(victim), bytes.NewReader(body), int64(len(body))); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	err = r.RestoreStream(context.Background(), v.ID, &out, StreamRestoreOptions{})
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), victim.String()) {
		t.Fatalf("err = %v, want ErrCorrupt naming %s", err, victim)
	}
	if !bytes.HasPrefix(data, out.Bytes()) {
		t.Fatal("what was written before the error is not a prefix of the stream")
	}
}

func TestChunkerParamsChecked(t *testing.T) {
	for _, p := range []ChunkerParams{
		{Algorithm: "rabin", Min: 1 << 10, Avg: 4 << 10, Max: 16 << 10},
		{Algorithm: ChunkerJC, Min: 8 << 10, Avg: 4 << 10, Max: 16 << 10},
		{Algorithm: ChunkerJC, Min: 1 << 10, Avg: 5 << 10, Max: 16 << 10},
		{Algorithm: ChunkerFastCDC, Min: 1 << 10, Avg: 4 << 10, Max: 64 << 20},
	} {
		if err := CheckChunkerParams(p); !errors.Is(err, ErrUnsupportedFormat) {
			t.Errorf("%+v: err = %v", p, err)
		}
		if _, err := Init(context.Background(), openStore(t, "mem"), InitConfig{Chunker: &p}, Options{}); err == nil {
			t.Errorf("Init accepted %+v", p)
		}
	}
	if err := CheckChunkerParams(DefaultChunker); err != nil {
		t.Fatal(err)
	}
}

// Encrypted repositories cut at key-dependent boundaries: the same stream in
// two repositories with different keys gives different chunk lengths.
func TestStreamKeyedChunking(t *testing.T) {
	data := dumpLike(8, 2<<20)
	lengths := func(r *Repository) []int64 {
		v, err := r.BackupStream(context.Background(), bytes.NewReader(data), StreamOptions{Volume: "db"})
		if err != nil {
			t.Fatal(err)
		}
		var ls []int64
		for _, ref := range v.Refs() {
			ls = append(ls, ref.Length)
		}
		return ls
	}
	plain := lengths(newStreamRepo(t, openStore(t, "mem"), ""))
	a := lengths(newStreamRepo(t, openStore(t, "mem"), "pw"))
	b := lengths(newStreamRepo(t, openStore(t, "mem"), "pw"))
	if slices.Equal(a, b) || slices.Equal(a, plain) {
		t.Fatalf("keyed chunking does not depend on the key: %d/%d/%d chunks", len(plain), len(a), len(b))
	}
}

// cairn-fastcdc must cut exactly where the library's fastcdc-v1.0.0 cuts,
// keyed and not, whatever the sizes and the data.
func TestFastCDCMatchesLibrary(t *testing.T) {
	inputs := map[string][]byte{
		"random": randBytes(11, 6<<20),
		"dump":   dumpLike(12, 6<<20),
		"blanks": append(bytes.Repeat([]byte(" "), 3<<20), dumpLike(13, 1<<20)...),
		"short":  randBytes(14, 3000),
	}
	for name, data := range inputs {
		for _, p := range [][3]int{{256 << 10, 1 << 20, 4 << 20}, {4 << 10, 16 << 10, 64 << 10}, {64, 128, 200}} {
			for _, key := range [][]byte{nil, bytes.Repeat([]byte{3}, 32)} {
				cut := func(algo string) []int {
					c, err := chunkers.NewChunker(algo, bytes.NewReader(data),
						&chunkers.ChunkerOpts{MinSize: p[0], NormalSize: p[1], MaxSize: p[2], Key: key})
					if err != nil {
						t.Fatal(err)
					}
					var ls []int
					for {
						ch, err := c.Next()
						ls = append(ls, len(ch))
						if err == io.EOF {
							return ls
						}
						if err != nil {
							t.Fatal(err)
						}
					}
				}
				if a, b := cut(fastCDCName), cut("fastcdc-v1.0.0"); !slices.Equal(a, b) {
					t.Errorf("%s %v keyed=%v: %d chunks, library %d", name, p, key != nil, len(a), len(b))
				}
			}
		}
	}
}

// repeatReader yields block over and over, n bytes in all.
type repeatReader struct {
	block  []byte
	n, off int64
}

func (r *repeatReader) Read(p []byte) (int, error) {
	if r.off >= r.n {
		return 0, io.EOF
	}
	i := r.off % int64(len(r.block))
	k := copy(p[:min(int64(len(p)), r.n-r.off)], r.block[i:])
	r.off += int64(k)
	return k, nil
}

// The stream pipeline's memory does not grow with the stream: a 1 GiB
// stream (of a repeated 24 MiB random block, so that the in-memory store
// stays small) peaks far below its size.
func TestStreamMemoryBounded(t *testing.T) {
	if testing.Short() {
		t.Skip("1 GiB stream")
	}
	r := newRepoChunker(t, openStore(t, "mem"), DefaultChunker)
	src := &repeatReader{block: randBytes(15, 24<<20+12345), n: 1 << 30}
	// Collect garbage eagerly, so that heap in use tracks live memory and not
	// how far the collector lags behind on a loaded machine.
	defer debug.SetGCPercent(debug.SetGCPercent(10))
	// Earlier tests of the process leave live data (mem:// stores live until
	// the process exits): measure the growth over what is live now.
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	var peak atomic.Uint64
	done := make(chan struct{})
	go func() {
		var ms runtime.MemStats
		for {
			select {
			case <-done:
				return
			case <-time.After(20 * time.Millisecond):
			}
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse > peak.Load() {
				peak.Store(ms.HeapInuse)
			}
		}
	}()
	v, err := r.BackupStream(context.Background(), src, StreamOptions{Volume: "big"})
	close(done)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("1 GiB stream: %d chunks, %d stored bytes, peak heap in use %d MiB (%d MiB before)", len(v.Refs()), v.Stats.BytesWritten, peak.Load()>>20, before.HeapInuse>>20)
	// The store holds ~24 MiB (the block, as incompressible chunks) and the
	// pipeline 2*Max + (4*Workers+Transfers)*Max at most.
	limit := uint64(24<<20) + uint64(2+4*runtime.GOMAXPROCS(0)+8)*uint64(DefaultChunker.Max) + 64<<20
	if grown := peak.Load() - min(peak.Load(), before.HeapInuse); grown > limit {
		t.Fatalf("peak heap grew by %d MiB (from %d MiB), more than %d MiB", grown>>20, before.HeapInuse>>20, limit>>20)
	}
}

// newRepoChunker initialises a repository with chunker p.
func newRepoChunker(t testing.TB, s objstore.Store, p ChunkerParams) *Repository {
	t.Helper()
	r, err := Init(context.Background(), s, InitConfig{Chunker: &p}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// Scrub, enforce and cleanup treat stream versions like volumes: a damaged
// chunk makes the stream invalid, and the next stream backup stores it again.
func TestStreamScrubAndRecover(t *testing.T) {
	s := openStore(t, "mem")
	r := newStreamRepo(t, s, "pw")
	ctx := context.Background()
	data := dumpLike(16, 1<<20)
	v, err := r.BackupStream(ctx, bytes.NewReader(data), StreamOptions{Volume: "db"})
	if err != nil {
		t.Fatal(err)
	}
	rep, err := r.Scrub(ctx, ScrubOptions{Deep: true, All: true})
	if err != nil || len(rep.Invalid) != 0 || rep.ObjectsChecked == 0 {
		t.Fatalf("clean deep scrub: %+v, %v", rep, err)
	}
	victim := dataKey(v.Refs()[1].ID)
	body := allObjects(t, s)[victim]
	body[len(body)-1] ^= 1
	if err := s.Put(ctx, victim, bytes.NewReader(body), int64(len(body))); err != nil {
		t.Fatal(err)
	}
	rep, err = r.Scrub(ctx, ScrubOptions{Deep: true, All: true})
	if err != nil || !slices.Contains(rep.Marked, v.ID) {
		t.Fatalf("deep scrub over a damaged chunk: %+v, %v", rep, err)
	}
	// A new process (as every cairn-pg run is) reads the repaired index.
	// (The Repository that ran the scrub still counts the damaged object in
	// its in-memory dedup set, for volumes too: reported to blockdiff's
	// maintainers.)
	r2, err := Open(ctx, s, Options{Passphrase: []byte("pw")})
	if err != nil {
		t.Fatal(err)
	}
	defer r2.Close()
	r = r2
	v2, err := r.BackupStream(ctx, bytes.NewReader(data), StreamOptions{Volume: "db"})
	if err != nil {
		t.Fatal(err)
	}
	if v2.Stats.BlocksNew == 0 {
		t.Fatalf("the damaged chunk was not stored again: %+v", v2.Stats)
	}
	if got := restoreStreamBytes(t, r, v2.ID); !bytes.Equal(got, data) {
		t.Fatal("the new stream does not restore")
	}
}
