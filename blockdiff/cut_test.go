package blockdiff

import (
	"bytes"
	"context"
	"errors"
	"io"
	"slices"
	"strings"
	"testing"
	"testing/iotest"

	chunkers "github.com/PlakarKorp/go-cdc-chunkers"
)

// libraryCuts is how go-cdc-chunkers' Chunker cuts data: the reference the
// cutter must match, so that streams stored before and after it dedup.
func libraryCuts(t *testing.T, p ChunkerParams, key, data []byte) [][]byte {
	t.Helper()
	c, err := chunkers.NewChunker(chunkerImpl[p.Algorithm], bytes.NewReader(data),
		&chunkers.ChunkerOpts{MinSize: p.Min, NormalSize: p.Avg, MaxSize: p.Max, Key: key})
	if err != nil {
		t.Fatal(err)
	}
	var out [][]byte
	for {
		ch, err := c.Next()
		if len(ch) > 0 {
			out = append(out, slices.Clone(ch))
		}
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
	}
}

// cutterCuts runs the cutter over src and returns copies of its chunks,
// checking that every segment reference is given back.
func cutterCuts(t *testing.T, p ChunkerParams, key []byte, src io.Reader) ([][]byte, error) {
	t.Helper()
	c, err := newCutter(p, key)
	if err != nil {
		t.Fatal(err)
	}
	var out [][]byte
	err = c.run(context.Background(), src, func(seg *segment, chunk []byte) error {
		out = append(out, slices.Clone(chunk))
		seg.release()
		return nil
	})
	for range segmentsInPool { // all segments back: no reference leaked
		if s := <-c.pool; s != nil && s.refs.Load() != 0 {
			t.Errorf("a segment came back with %d references", s.refs.Load())
		}
	}
	return out, err
}

// The cutter cuts where the library's Chunker cuts, for both algorithms,
// keyed or not, whatever the stream's length relative to the segments
// (4*Max) and however the reader splits its reads.
func TestCutterMatchesLibrary(t *testing.T) {
	small := []ChunkerParams{
		{Algorithm: ChunkerFastCDC, Min: 1 << 10, Avg: 4 << 10, Max: 16 << 10},
		{Algorithm: ChunkerJC, Min: 1 << 10, Avg: 4 << 10, Max: 16 << 10},
		{Algorithm: ChunkerFastCDC, Min: 64, Avg: 128, Max: 200},
	}
	seg := 4 * (16 << 10)
	inputs := map[string][]byte{
		"empty":       nil,
		"one byte":    {7},
		"below min":   randBytes(1, 900),
		"one max":     randBytes(2, 16<<10),
		"one segment": randBytes(3, seg),
		"segment+1":   randBytes(4, seg+1),
		"random":      randBytes(5, 10*seg+12345),
		"dump":        dumpLike(6, 700<<10),
		"blanks":      append(bytes.Repeat([]byte(" "), 200<<10), dumpLike(7, 100<<10)...),
		"zeros":       make([]byte, 3*seg+5),
	}
	readers := map[string]func([]byte) io.Reader{
		"whole": func(b []byte) io.Reader { return bytes.NewReader(b) },
		"half":  func(b []byte) io.Reader { return iotest.HalfReader(bytes.NewReader(b)) },
		"eof with data": func(b []byte) io.Reader {
			return iotest.DataErrReader(bytes.NewReader(b))
		},
	}
	for _, p := range small {
		for _, key := range [][]byte{nil, bytes.Repeat([]byte{9}, 32)} {
			for name, data := range inputs {
				want := libraryCuts(t, p, key, data)
				for rname, rd := range readers {
					got, err := cutterCuts(t, p, key, rd(data))
					if err != nil {
						t.Fatalf("%s/%s %+v: %v", name, rname, p, err)
					}
					if !slices.EqualFunc(got, want, bytes.Equal) {
						t.Errorf("%s/%s %+v keyed=%v: %d chunks, library %d", name, rname, p, key != nil, len(got), len(want))
					}
				}
			}
		}
	}
}

// The default parameters on a dump-like stream of several 16 MiB segments.
func TestCutterMatchesLibraryDefault(t *testing.T) {
	data := dumpLike(8, 40<<20)
	got, err := cutterCuts(t, DefaultChunker, nil, iotest.HalfReader(bytes.NewReader(data)))
	if err != nil {
		t.Fatal(err)
	}
	if want := libraryCuts(t, DefaultChunker, nil, data); !slices.EqualFunc(got, want, bytes.Equal) {
		t.Fatalf("%d chunks, library %d", len(got), len(want))
	}
}

// A read error ends the cut with an error naming the byte where it
// happened; a reader that returns nothing forever is not waited on forever.
func TestCutterReadErrors(t *testing.T) {
	p := ChunkerParams{Algorithm: ChunkerFastCDC, Min: 1 << 10, Avg: 4 << 10, Max: 16 << 10}
	boom := errors.New("boom")
	src := io.MultiReader(bytes.NewReader(randBytes(1, 100_000)), iotest.ErrReader(boom))
	_, err := cutterCuts(t, p, nil, src)
	if !errors.Is(err, boom) || !strings.Contains(err.Error(), "at byte 100000") {
		t.Fatalf("err = %v, want boom at byte 100000", err)
	}
	_, err = cutterCuts(t, p, nil, emptyReader{})
	if !errors.Is(err, io.ErrNoProgress) {
		t.Fatalf("err = %v, want io.ErrNoProgress", err)
	}
}

// emptyReader returns (0, nil) forever.
type emptyReader struct{}

func (emptyReader) Read([]byte) (int, error) { return 0, nil }

// A cancelled context stops the cutter while its reader blocks.
func TestCutterCancel(t *testing.T) {
	p := ChunkerParams{Algorithm: ChunkerFastCDC, Min: 1 << 10, Avg: 4 << 10, Max: 16 << 10}
	c, err := newCutter(p, nil)
	if err != nil {
		t.Fatal(err)
	}
	pr, pw := io.Pipe()
	defer pw.Close()
	ctx, cancel := context.WithCancelCause(context.Background())
	stop := errors.New("stop")
	go func() {
		_, _ = pw.Write(randBytes(2, 200<<10))
		cancel(stop)
	}()
	err = c.run(ctx, pr, func(seg *segment, _ []byte) error { seg.release(); return nil })
	if !errors.Is(err, stop) {
		t.Fatalf("err = %v, want the context's cause", err)
	}
}
