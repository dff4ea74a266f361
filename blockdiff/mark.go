package blockdiff

import (
	"bufio"
	"bytes"
	"container/heap"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"sync"
)

// Marking in bounded memory (FORMAT.md, "Cleanup and index compaction"):
// cleanup, scrub, repair and the storage statistics need the set of objects
// that manifests reference, which at 100 TiB is tens of millions of IDs.
// The references go into a markSorter, which keeps at most markRunSize of
// them in memory, sorts and deduplicates each full batch and spills it to a
// run file in a local temporary directory; a k-way merge of the runs yields
// every referenced object once, in ID order. That stream is merge-joined
// with the listing of data/ (in key order, so in ID order: dataLister) and
// with the index (in ID order: indexScan.Entries).

// markRec is one object of the marking (or, in sortedIndex's runs, one
// index entry).
type markRec struct {
	id     ID
	length uint32 // plaintext length a manifest records (at most MaxBlockSize*4)
	stored uint32 // stored size an index entry records (sortedIndex); 0 in marks
	flags  uint8  // markRef, markValid
}

const (
	markRef   uint8 = 1 << 0 // some manifest references the object
	markValid uint8 = 1 << 1 // a valid manifest references it
	markUser  uint8 = 1 << 2 // free for the caller (scrub: selected for checking)
)

const (
	markRecSize = 32 + 4 + 4 + 1
)

var (
	// markRunSize is how many records a sorter holds before it spills a
	// run: 256Ki records of 44 bytes, 11 MiB, so that the fixed part of a
	// cleanup's memory stays small (a larger buffer saves no I/O: every
	// record is written once to a run and read once more per merge pass).
	// (A variable for tests.)
	markRunSize = 1 << 18
	// markFanIn bounds the runs merged at once (a 64 KiB buffer each);
	// more runs are merged in passes.
	markFanIn = 64
)

func cmpMark(a, b markRec) int { return bytes.Compare(a.id[:], b.id[:]) }

// mergeMark folds b into a (same ID): flags are or-ed, and the length of
// a reference wins over none.
func mergeMark(a *markRec, b markRec) {
	if a.length == 0 {
		a.length = b.length
	}
	if a.stored == 0 {
		a.stored = b.stored
	}
	a.flags |= b.flags
}

// markSorter collects markRecs from concurrent writers and yields them
// sorted and unique. Its temporary files live in a directory of its own
// under dir; close removes them.
type markSorter struct {
	dir     string // parent of the run directory; "" for os.TempDir()
	runSize int

	mu      sync.Mutex
	buf     []markRec
	runDir  string
	runs    []string
	readers []*runReader // open run files, closed by close
	added   int64        // records added
}

func newMarkSorter(dir string) *markSorter {
	return &markSorter{dir: dir, runSize: markRunSize}
}

// add appends records, spilling a run when the buffer is full.
func (s *markSorter) add(recs []markRec) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.added += int64(len(recs))
	for len(recs) > 0 {
		if s.buf == nil {
			// Grown by doubling up to a run: whole once the first run spills.
			s.buf = make([]markRec, 0, min(s.runSize, 1<<16))
		}
		if len(s.buf) == cap(s.buf) && cap(s.buf) < s.runSize {
			s.buf = slices.Grow(s.buf, min(2*cap(s.buf), s.runSize)-len(s.buf))
		}
		n := min(len(recs), s.runSize-len(s.buf))
		s.buf = append(s.buf, recs[:n]...)
		recs = recs[n:]
		if len(s.buf) >= s.runSize {
			if err := s.spill(); err != nil {
				return err
			}
		}
	}
	return nil
}

// sortBuf sorts and deduplicates the buffer in place.
func sortMarks(buf []markRec) []markRec {
	slices.SortFunc(buf, cmpMark)
	out := buf[:0]
	for _, m := range buf {
		if n := len(out); n > 0 && out[n-1].id == m.id {
			mergeMark(&out[n-1], m)
			continue
		}
		out = append(out, m)
	}
	return out
}

// spill writes the sorted buffer as a run. Called with mu held.
func (s *markSorter) spill() error {
	buf := sortMarks(s.buf)
	name, err := s.newRun()
	if err != nil {
		return err
	}
	if err := writeRun(name, slices.Values(buf)); err != nil {
		return err
	}
	s.runs = append(s.runs, name)
	s.buf = s.buf[:0]
	return nil
}

func (s *markSorter) newRun() (string, error) {
	if s.runDir == "" {
		d, err := os.MkdirTemp(s.dir, "cairn-mark-")
		if err != nil {
			return "", fmt.Errorf("blockdiff: temporary directory for marking: %w", err)
		}
		s.runDir = d
	}
	f, err := os.CreateTemp(s.runDir, "run-")
	if err != nil {
		return "", fmt.Errorf("blockdiff: temporary run: %w", err)
	}
	name := f.Name()
	f.Close()
	return name, nil
}

// writeRun writes records to the file name.
func writeRun(name string, recs func(yield func(markRec) bool)) error {
	f, err := os.OpenFile(name, os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("blockdiff: temporary run: %w", err)
	}
	w := bufio.NewWriterSize(f, 64<<10)
	var b [markRecSize]byte
	for m := range recs {
		copy(b[:32], m.id[:])
		binary.BigEndian.PutUint32(b[32:], m.length)
		binary.BigEndian.PutUint32(b[36:], m.stored)
		b[40] = m.flags
		if _, err := w.Write(b[:]); err != nil {
			break
		}
	}
	err = w.Flush()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("blockdiff: write temporary run: %w", err)
	}
	return nil
}

// closeReaders closes the open run files.
func (s *markSorter) closeReaders() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, rr := range s.readers {
		rr.f.Close()
	}
	s.readers = nil
}

// close closes and removes the sorter's temporary files.
func (s *markSorter) close() {
	s.closeReaders()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.runDir != "" {
		_ = os.RemoveAll(s.runDir)
		s.runDir = ""
	}
	s.runs, s.buf = nil, nil
}

// markSource is a pull iterator of sorted, unique markRecs.
type markSource interface {
	// next returns the next record, false at the end.
	next() (markRec, bool, error)
}

// runReader reads a run file.
type runReader struct {
	f   *os.File
	r   *bufio.Reader
	buf [markRecSize]byte
}

func openRun(name string) (*runReader, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, fmt.Errorf("blockdiff: temporary run: %w", err)
	}
	return &runReader{f: f, r: bufio.NewReaderSize(f, 64<<10)}, nil
}

func (rr *runReader) next() (markRec, bool, error) {
	if _, err := io.ReadFull(rr.r, rr.buf[:]); err != nil {
		if err == io.EOF {
			return markRec{}, false, nil
		}
		return markRec{}, false, fmt.Errorf("blockdiff: read temporary run: %w", err)
	}
	var m markRec
	copy(m.id[:], rr.buf[:32])
	m.length = binary.BigEndian.Uint32(rr.buf[32:])
	m.stored = binary.BigEndian.Uint32(rr.buf[36:])
	m.flags = rr.buf[40]
	return m, true, nil
}

// sliceSource yields a sorted slice.
type sliceSource struct{ s []markRec }

func (ss *sliceSource) next() (markRec, bool, error) {
	if len(ss.s) == 0 {
		return markRec{}, false, nil
	}
	m := ss.s[0]
	ss.s = ss.s[1:]
	return m, true, nil
}

// mergeHeap merges sources; each yields sorted unique records, and the
// merge folds equal IDs of different sources into one.
type mergeHeap struct {
	srcs []markSource
	tops []markRec
	h    []int // indexes into srcs, a min-heap by tops
}

func (m *mergeHeap) Len() int           { return len(m.h) }
func (m *mergeHeap) Less(i, j int) bool { return cmpMark(m.tops[m.h[i]], m.tops[m.h[j]]) < 0 }
func (m *mergeHeap) Swap(i, j int)      { m.h[i], m.h[j] = m.h[j], m.h[i] }
func (m *mergeHeap) Push(x any)         { m.h = append(m.h, x.(int)) }
func (m *mergeHeap) Pop() any {
	x := m.h[len(m.h)-1]
	m.h = m.h[:len(m.h)-1]
	return x
}

func newMerge(srcs []markSource) (*mergeHeap, error) {
	m := &mergeHeap{srcs: srcs, tops: make([]markRec, len(srcs))}
	for i, s := range srcs {
		rec, ok, err := s.next()
		if err != nil {
			return nil, err
		}
		if ok {
			m.tops[i] = rec
			m.h = append(m.h, i)
		}
	}
	heap.Init(m)
	return m, nil
}

func (m *mergeHeap) next() (markRec, bool, error) {
	if len(m.h) == 0 {
		return markRec{}, false, nil
	}
	out := m.tops[m.h[0]]
	for len(m.h) > 0 && m.tops[m.h[0]].id == out.id {
		i := m.h[0]
		if m.tops[i].flags != out.flags || m.tops[i].length != out.length || m.tops[i].stored != out.stored {
			mergeMark(&out, m.tops[i])
		}
		rec, ok, err := m.srcs[i].next()
		if err != nil {
			return markRec{}, false, err
		}
		if ok {
			if cmpMark(rec, m.tops[i]) <= 0 {
				return markRec{}, false, errors.New("blockdiff: temporary run out of order")
			}
			m.tops[i] = rec
			heap.Fix(m, 0)
		} else {
			heap.Pop(m)
		}
	}
	return out, true, nil
}

// finish returns the sorted, unique records added so far. The sorter must
// not be added to afterwards; close it when done with the source.
func (s *markSorter) finish() (markSource, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	last := sortMarks(s.buf)
	if len(s.runs) == 0 {
		return &sliceSource{s: last}, nil
	}
	// Merge runs in passes until markFanIn remain.
	for len(s.runs) > markFanIn {
		group := s.runs[:markFanIn]
		srcs := make([]markSource, 0, len(group))
		var files []*runReader
		for _, name := range group {
			rr, err := openRun(name)
			if err != nil {
				return nil, err
			}
			files = append(files, rr)
			srcs = append(srcs, rr)
		}
		m, err := newMerge(srcs)
		if err != nil {
			return nil, err
		}
		name, err := s.newRun()
		if err != nil {
			return nil, err
		}
		var merr error
		err = writeRun(name, func(yield func(markRec) bool) {
			for {
				rec, ok, err := m.next()
				if err != nil {
					merr = err
					return
				}
				if !ok || !yield(rec) {
					return
				}
			}
		})
		for _, rr := range files {
			rr.f.Close()
		}
		if err = errors.Join(err, merr); err != nil {
			return nil, err
		}
		for _, g := range group {
			_ = os.Remove(g)
		}
		s.runs = append(s.runs[markFanIn:], name)
	}
	srcs := []markSource{&sliceSource{s: last}}
	for _, name := range s.runs {
		rr, err := openRun(name)
		if err != nil {
			return nil, err
		}
		srcs = append(srcs, rr)
		s.readers = append(s.readers, rr) // closed by close
	}
	return newMerge(srcs)
}

// markVersions streams the references of versions into s (in parallel,
// Transfers manifests at a time, one frame of each in memory): every
// non-sparse reference with markRef, and markValid for valid versions.
// extra, when set, may add flags per version. A manifest removed meanwhile
// is skipped; a damaged one fails with its error (wrapping ErrCorrupt or
// ErrUnsupportedFormat).
func (r *Repository) markVersions(ctx context.Context, versions []*Version, s *markSorter, extra func(v *Version) uint8) error {
	return r.markVersionsFunc(ctx, versions, s, extra, nil)
}

// markVersionsFunc is markVersions that, with onDamage set, reports a
// damaged manifest to it (from several goroutines) and goes on. The
// references of a framed manifest read before its damage was found stay
// marked.
func (r *Repository) markVersionsFunc(ctx context.Context, versions []*Version, s *markSorter, extra func(v *Version) uint8, onDamage func(v *Version, err error)) error {
	return r.parallel(ctx, len(versions), func(ctx context.Context, i int) error {
		v := versions[i]
		flags := markRef
		if v.Status == StatusValid {
			flags |= markValid
		}
		if extra != nil {
			flags |= extra(v)
		}
		batch := make([]markRec, 0, 4096)
		_, err := r.scanVersion(ctx, v.ID, nil, func(ref Ref) error {
			if ref.Sparse {
				return nil
			}
			batch = append(batch, markRec{id: ref.ID, length: uint32(ref.Length), flags: flags})
			if len(batch) == cap(batch) {
				if err := s.add(batch); err != nil {
					return err
				}
				batch = batch[:0]
			}
			return nil
		})
		if errors.Is(err, ErrVersionNotFound) {
			return nil // removed meanwhile: what it referenced may stay marked, which keeps more
		}
		if onDamage != nil && isDamage(err) {
			onDamage(v, err)
			return s.add(batch)
		}
		if err != nil {
			return err
		}
		return s.add(batch)
	})
}

// materialize finishes the sorter into one sorted, unique sequence that can
// be read more than once (a slice when nothing was spilled, else one more
// run file) and returns how to open it and its length.
func (s *markSorter) materialize() (open func() (markSource, error), n int64, err error) {
	src, err := s.finish()
	if err != nil {
		return nil, 0, err
	}
	if ss, ok := src.(*sliceSource); ok {
		all := ss.s
		return func() (markSource, error) { return &sliceSource{s: all}, nil }, int64(len(all)), nil
	}
	s.mu.Lock()
	name, err := s.newRun()
	s.mu.Unlock()
	if err != nil {
		return nil, 0, err
	}
	var merr error
	err = writeRun(name, func(yield func(markRec) bool) {
		for {
			rec, ok, err := src.next()
			if err != nil {
				merr = err
				return
			}
			if !ok || !yield(rec) {
				return
			}
			n++
		}
	})
	if err = errors.Join(err, merr); err != nil {
		return nil, 0, err
	}
	s.closeReaders()
	return func() (markSource, error) {
		rr, err := openRun(name)
		if err != nil {
			return nil, err
		}
		s.mu.Lock()
		s.readers = append(s.readers, rr)
		s.mu.Unlock()
		return rr, nil
	}, n, nil
}
