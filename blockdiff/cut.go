package blockdiff

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"sync/atomic"

	chunkers "github.com/PlakarKorp/go-cdc-chunkers"
)

// Cutting a stream into chunks without copying them: a reader goroutine
// reads the stream into large segments, the cutter runs the chunking
// algorithm over each segment in place and hands out chunks as slices of
// it, and a segment goes back to the pool when the last of its chunks has
// been hashed and encoded. Only the unchunked tail of a segment (less than
// Max bytes) is copied, into the headroom in front of the next segment's
// data, so that a chunk is always contiguous. The cut points are those of
// go-cdc-chunkers' Chunker: each cut sees the next min(Max, rest of the
// stream) bytes (TestCutterMatchesLibrary).

// segmentsInPool is how many segments a stream backup uses at most: one
// being read, one being cut, one whose chunks are still being hashed.
const segmentsInPool = 3

// segment is a run of the stream in one buffer: Max bytes of headroom for
// the previous segment's tail, then the data read.
type segment struct {
	buf  []byte
	refs atomic.Int32 // the cutter's reference and one per chunk handed out
	pool chan *segment
}

// release drops one reference; the last returns the segment to its pool.
func (s *segment) release() {
	if s.refs.Add(-1) == 0 {
		s.pool <- s
	}
}

// filled is one segment read: n bytes after the headroom, and the read
// error that ended it (io.EOF at the end of the stream).
type filled struct {
	seg *segment
	n   int
	err error
}

// cutFunc returns the length of the chunk at the start of window, which
// holds min(Max, rest of the stream) bytes.
type cutFunc func(window []byte) int

// newCutFunc is the cut function of chunking parameters p, keyed by key
// (nil: the public gear table).
func newCutFunc(p ChunkerParams, key []byte) (cutFunc, error) {
	if err := CheckChunkerParams(p); err != nil {
		return nil, err
	}
	opts := &chunkers.ChunkerOpts{MinSize: p.Min, NormalSize: p.Avg, MaxSize: p.Max, Key: key}
	if p.Algorithm == ChunkerFastCDC {
		c := &cairnFastCDC{}
		if err := c.Setup(opts); err != nil {
			return nil, fmt.Errorf("blockdiff: chunker: %w", err)
		}
		return func(w []byte) int { return c.Algorithm(opts, w, len(w)) }, nil
	}
	// Other algorithms are only reachable through the library's Chunker:
	// run it over the window alone (a copy, but they are not the default).
	var src bytes.Reader
	ch, err := chunkers.NewChunkerBuffer(chunkerImpl[p.Algorithm], &src, opts, make([]byte, p.Max))
	if err != nil {
		return nil, fmt.Errorf("blockdiff: chunker: %w", err)
	}
	return func(w []byte) int {
		src.Reset(w)
		ch.Reset(&src)
		c, _ := ch.Next() // reads from memory: no error but io.EOF
		return len(c)
	}, nil
}

// cutter cuts one stream.
type cutter struct {
	cut      cutFunc
	max      int // ChunkerParams.Max: the headroom and the longest chunk
	pool     chan *segment
	segBytes int // data bytes per segment
}

// newCutter returns a cutter for parameters p whose segments hold 4*Max
// bytes of data (16 MiB by default).
func newCutter(p ChunkerParams, key []byte) (*cutter, error) {
	cut, err := newCutFunc(p, key)
	if err != nil {
		return nil, err
	}
	c := &cutter{cut: cut, max: p.Max, pool: make(chan *segment, segmentsInPool), segBytes: 4 * p.Max}
	for range segmentsInPool {
		c.pool <- nil // allocated on first use, so small streams stay small
	}
	return c, nil
}

// run reads src to its end and calls emit with each chunk, in order. The
// chunk is valid until seg.release(), which emit (or whoever it hands the
// chunk to) must call once. run returns src's first read error other than
// io.EOF, emit's first error, or context.Cause(ctx). A Read of src that
// blocks keeps the reading goroutine until it returns; run does not wait
// for it.
func (c *cutter) run(ctx context.Context, src io.Reader, emit func(seg *segment, chunk []byte) error) error {
	done := make(chan struct{})
	defer close(done)
	segs := make(chan filled, 1)
	go c.read(src, segs, done)

	next := func() (filled, error) {
		select {
		case f := <-segs:
			return f, nil
		case <-ctx.Done():
			return filled{}, context.Cause(ctx)
		}
	}
	f, err := next()
	if err != nil {
		return err
	}
	seg, data := f.seg, f.seg.buf[c.max:c.max+f.n]
	defer func() { seg.release() }()
	var off int64 // stream offset of data
	for {
		eof := f.err == io.EOF
		if f.err != nil && !eof {
			return fmt.Errorf("read stream at byte %d: %w", off+int64(len(data)), f.err)
		}
		for len(data) >= c.max || (eof && len(data) > 0) {
			w := data[:min(len(data), c.max)]
			n := c.cut(w)
			if n <= 0 || n > len(w) { // a chunker bug must not become a panic or a loop
				return fmt.Errorf("blockdiff: chunker cut %d bytes of a %d-byte window", n, len(w))
			}
			seg.refs.Add(1)
			if err := emit(seg, data[:n:n]); err != nil {
				return err
			}
			data, off = data[n:], off+int64(n)
		}
		if eof {
			return nil
		}
		if f, err = next(); err != nil {
			return err
		}
		// The tail goes in front of the new data: len(data) < max.
		start := c.max - len(data)
		copy(f.seg.buf[start:c.max], data)
		seg.release()
		seg, data = f.seg, f.seg.buf[start:c.max+f.n]
	}
}

// read fills segments from src and sends them on segs until src ends or
// done is closed.
func (c *cutter) read(src io.Reader, segs chan<- filled, done <-chan struct{}) {
	for {
		var s *segment
		select {
		case s = <-c.pool:
		case <-done:
			return
		}
		if s == nil {
			s = &segment{buf: make([]byte, c.max+c.segBytes), pool: c.pool}
		}
		s.refs.Store(1) // the cutter's
		n, err := readFull(src, s.buf[c.max:])
		select {
		case segs <- filled{seg: s, n: n, err: err}:
		case <-done:
			return
		}
		if err != nil {
			return
		}
	}
}

// readFull reads until p is full (nil error) or src fails (io.EOF at its
// end), guarding against a reader that returns nothing forever.
func readFull(src io.Reader, p []byte) (int, error) {
	n, empty := 0, 0
	for n < len(p) {
		m, err := src.Read(p[n:])
		n += m
		if err != nil {
			return n, err
		}
		if m > 0 {
			empty = 0
		} else if empty++; empty >= 100 {
			return n, io.ErrNoProgress
		}
	}
	return n, nil
}
