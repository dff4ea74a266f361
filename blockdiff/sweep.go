package blockdiff

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"iter"
	"math"
	"os"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/cairn-backup/cairn/objstore"
	"github.com/klauspost/compress/zstd"
	"lukechampine.com/blake3"
)

// joinRow is one object of a merge-join of the marks, the listing of data/
// and the index: every field whose stream holds the ID is set.
type joinRow struct {
	id      ID
	listed  bool // data/ holds the object
	obj     dataObj
	mark    markRec // zero flags: no manifest references it
	inIndex bool
	idx     indexEntry
}

// dataSource is a pull iterator over data objects in ID order.
type dataSource interface {
	next() (dataObj, bool, error)
}

// joinMarks merge-joins three streams in ID order and calls fn once per ID
// found in any of them; idx may be nil (no index).
func joinMarks(data dataSource, marks markSource, idx func() (indexEntry, error, bool), fn func(*joinRow) error) error {
	var (
		d        dataObj
		m        markRec
		e        indexEntry
		dOK, mOK bool
		eOK      bool
		err      error
	)
	if d, dOK, err = data.next(); err != nil {
		return err
	}
	if m, mOK, err = marks.next(); err != nil {
		return err
	}
	nextIdx := func() error {
		if idx == nil {
			eOK = false
			return nil
		}
		prev, had := e.ID, eOK
		var ierr error
		e, ierr, eOK = idx()
		if ierr != nil {
			return ierr
		}
		if eOK && had && compareID(e.ID, prev) <= 0 {
			return fmt.Errorf("blockdiff: index entries out of order (%s after %s)", e.ID, prev)
		}
		return nil
	}
	if err := nextIdx(); err != nil {
		return err
	}
	var row joinRow
	for dOK || mOK || eOK {
		var id ID
		first := true
		for _, c := range []struct {
			ok bool
			id *ID
		}{{dOK, &d.id}, {mOK, &m.id}, {eOK, &e.ID}} {
			if c.ok && (first || compareID(*c.id, id) < 0) {
				id, first = *c.id, false
			}
		}
		row = joinRow{id: id}
		if dOK && d.id == id {
			row.listed, row.obj = true, d
			if d, dOK, err = data.next(); err != nil {
				return err
			}
		}
		if mOK && m.id == id {
			row.mark = m
			if m, mOK, err = marks.next(); err != nil {
				return err
			}
		}
		if eOK && e.ID == id {
			row.inIndex, row.idx = true, e
			if err := nextIdx(); err != nil {
				return err
			}
		}
		if err := fn(&row); err != nil {
			return err
		}
	}
	return nil
}

// sweepFiles are a cleanup's decisions, kept during the join and acted on
// after it: the entries of the new index, in ID order, and the objects to
// delete. Each is held in memory up to 1 MiB and spilled to a local
// temporary file beyond, so that a small repository needs no writable
// temporary directory.
type sweepFiles struct {
	tmp       string // parent of dir
	dir       string // created at the first spill
	keepB     spillBuf
	delB      spillBuf
	nDel      int
	perPrefix [256]int64 // deletions by the ID's first byte (its data/xx/ folder)
}

const keepRecSize = 32 + 8 + 8

func newSweepFiles(tmp string) (*sweepFiles, error) {
	s := &sweepFiles{tmp: tmp}
	mkdir := func() (string, error) {
		if s.dir == "" {
			d, err := os.MkdirTemp(s.tmp, "cairn-sweep-")
			if err != nil {
				return "", fmt.Errorf("blockdiff: temporary directory for cleanup (see --temp-dir): %w", err)
			}
			s.dir = d
		}
		return s.dir, nil
	}
	s.keepB = spillBuf{name: "keep", mkdir: mkdir, limit: 1 << 20}
	s.delB = spillBuf{name: "delete", mkdir: mkdir, limit: 1 << 20}
	return s, nil
}

// spillBuf is an append-only byte buffer that moves to a temporary file
// once it holds more than limit bytes.
type spillBuf struct {
	name  string
	mkdir func() (string, error)
	limit int
	mem   []byte
	f     *os.File
	w     *bufio.Writer
	size  int64
}

func (b *spillBuf) write(p []byte) error {
	b.size += int64(len(p))
	if b.f == nil {
		if len(b.mem)+len(p) <= b.limit {
			b.mem = append(b.mem, p...)
			return nil
		}
		dir, err := b.mkdir()
		if err != nil {
			return err
		}
		if b.f, err = os.Create(dir + "/" + b.name); err != nil {
			return fmt.Errorf("blockdiff: temporary file for cleanup: %w", err)
		}
		b.w = bufio.NewWriterSize(b.f, 64<<10)
		p = append(b.mem, p...)
		b.mem = nil
	}
	if _, err := b.w.Write(p); err != nil {
		return fmt.Errorf("blockdiff: write temporary file: %w", err)
	}
	return nil
}

func (b *spillBuf) flush() error {
	if b.w == nil {
		return nil
	}
	if err := b.w.Flush(); err != nil {
		return fmt.Errorf("blockdiff: write temporary file: %w", err)
	}
	return nil
}

// readerAt reads what was written (after flush).
func (b *spillBuf) readerAt() io.ReaderAt {
	if b.f == nil {
		return bytes.NewReader(b.mem)
	}
	return b.f
}

func (b *spillBuf) close() {
	if b.f != nil {
		b.f.Close()
	}
	b.mem = nil
}

func (s *sweepFiles) keep(e indexEntry) error {
	var b [keepRecSize]byte
	copy(b[:32], e.ID[:])
	binary.BigEndian.PutUint64(b[32:], uint64(e.Stored))
	binary.BigEndian.PutUint64(b[40:], uint64(e.Length))
	return s.keepB.write(b[:])
}

func (s *sweepFiles) del(id ID) error {
	s.nDel++
	s.perPrefix[id[0]]++
	return s.delB.write(id[:])
}

func (s *sweepFiles) flush() error {
	if err := s.keepB.flush(); err != nil {
		return err
	}
	return s.delB.flush()
}

// kept iterates the entries of the new index, in ID order.
func (s *sweepFiles) kept() iter.Seq2[indexEntry, error] {
	return func(yield func(indexEntry, error) bool) {
		r := bufio.NewReaderSize(io.NewSectionReader(s.keepB.readerAt(), 0, s.keepB.size), 64<<10)
		var b [keepRecSize]byte
		for {
			if _, err := io.ReadFull(r, b[:]); err != nil {
				if err != io.EOF {
					yield(indexEntry{}, fmt.Errorf("blockdiff: read temporary file: %w", err))
				}
				return
			}
			var e indexEntry
			copy(e.ID[:], b[:32])
			e.Stored = int64(binary.BigEndian.Uint64(b[32:]))
			e.Length = int64(binary.BigEndian.Uint64(b[40:]))
			if !yield(e, nil) {
				return
			}
		}
	}
}

// deleteAll deletes the objects of the delete file, each after check, and
// returns how many it deleted. Transfers workers each take a data/xx/
// prefix at a time and delete its objects in order, so that they work in
// different folders of a file store (whose deletions in one folder
// serialize) and still read the file sequentially.
func (s *sweepFiles) deleteAll(ctx context.Context, r *Repository, check func() error) (int, error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	prefixes := make(chan int, 256)
	var offs [256]int64
	var off int64
	for p, n := range s.perPrefix {
		offs[p] = off
		off += n * int64(len(ID{}))
		if n > 0 {
			prefixes <- p
		}
	}
	close(prefixes)
	var deleted atomic.Int64
	var wg sync.WaitGroup
	for range max(r.opts.Transfers, 1) {
		wg.Go(func() {
			for p := range prefixes {
				n := s.perPrefix[p]
				rd := bufio.NewReaderSize(io.NewSectionReader(s.delB.readerAt(), offs[p], n*int64(len(ID{}))), 32<<10)
				for range n {
					var id ID
					if _, err := io.ReadFull(rd, id[:]); err != nil {
						cancel(fmt.Errorf("blockdiff: read temporary file: %w", err))
						return
					}
					if ctx.Err() != nil {
						return
					}
					if err := check(); err != nil {
						cancel(err)
						return
					}
					if err := r.store.Delete(ctx, dataKey(id)); err != nil {
						cancel(fmt.Errorf("blockdiff: delete %s: %w", dataKey(id), err))
						return
					}
					deleted.Add(1)
				}
			}
		})
	}
	wg.Wait()
	if err := context.Cause(ctx); err != nil && ctx.Err() != nil {
		return int(deleted.Load()), err
	}
	return int(deleted.Load()), nil
}

func (s *sweepFiles) close() {
	s.keepB.close()
	s.delB.close()
	if s.dir != "" {
		_ = os.RemoveAll(s.dir)
	}
}

// indexStream is an index in ID order (sortedIndex).
type indexStream struct {
	// next returns the next entry, false at the end.
	next func() (indexEntry, error, bool)
	// stop ends the stream and removes its temporary files.
	stop func()
	// damaged lists the damaged segments and, once the stream ended, the
	// damaged objects of the generations.
	damaged func() []string
}

// sortedIndex returns the index of scan in ID order, for cleanup, scrub and
// repair, without holding the uncompacted segments in memory as
// indexScan.Entries does (in a repository of format 1 or 2 they are the
// whole index, tens of millions of entries): the segments are read one at a
// time (segmentReader), each walked into sorted runs on local disk
// (markSorter: an entry's ID, stored size and length, each at most 2^32-1),
// and merged with the entries of the generations, a segment's entry winning
// over a generation's for the same ID. Memory: one segment's sealed bytes
// (about 32 MiB for 2^20 entries), the sorter's buffer (markRunSize
// records), and two packs of the generations (genEntries).
func (r *Repository) sortedIndex(ctx context.Context, scan *indexScan, tmp string) (*indexStream, error) {
	sorter := newMarkSorter(tmp)
	var segDamaged []string
	seg, err := newSegmentReader()
	if err != nil {
		sorter.close()
		return nil, err
	}
	defer seg.close()
	batch := make([]markRec, 0, 4096)
	for i, key := range scan.segs {
		if err := ctx.Err(); err != nil {
			sorter.close()
			return nil, err
		}
		err := seg.read(ctx, r, key, scan.segSizes[i])
		if errors.Is(err, objstore.ErrNotExist) {
			continue
		}
		if err == nil {
			// Checked whole first, so that a damaged segment adds nothing.
			if err = seg.walk(nil); err != nil {
				err = fmt.Errorf("blockdiff: %s: %w", key, err)
			}
		}
		if isDamage(err) {
			r.log.Warn("damaged index segment: treated as absent (cleanup replaces it)", "segment", key, "err", err)
			segDamaged = append(segDamaged, key)
			continue
		}
		if err != nil {
			sorter.close()
			return nil, err
		}
		batch = batch[:0]
		err = seg.walk(func(e indexEntry) error {
			batch = append(batch, markRec{id: e.ID, length: uint32(min(e.Length, math.MaxUint32)),
				stored: uint32(min(e.Stored, math.MaxUint32)), flags: markRef})
			if len(batch) < cap(batch) {
				return nil
			}
			err := sorter.add(batch)
			batch = batch[:0]
			return err
		})
		if err == nil {
			err = sorter.add(batch)
		}
		if err != nil {
			sorter.close()
			return nil, fmt.Errorf("blockdiff: %s: %w", key, err)
		}
	}
	seg.close()
	segs, err := sorter.finish()
	if err != nil {
		sorter.close()
		return nil, err
	}
	gens := &indexScan{r: r, dirs: scan.dirs, Generations: scan.Generations}
	genNext, genStop := iter.Pull2(gens.Entries(ctx))
	sm, sOK, serr := segs.next()
	ge, gerr, gOK := genNext()
	next := func() (indexEntry, error, bool) {
		switch {
		case serr != nil:
			return indexEntry{}, serr, false
		case gerr != nil:
			return indexEntry{}, gerr, false
		case !sOK && !gOK:
			return indexEntry{}, nil, false
		}
		if sOK && (!gOK || compareID(sm.id, ge.ID) <= 0) {
			out := indexEntry{ID: sm.id, Stored: int64(sm.stored), Length: int64(sm.length)}
			if gOK && ge.ID == sm.id {
				ge, gerr, gOK = genNext()
			}
			sm, sOK, serr = segs.next()
			return out, nil, true
		}
		out := ge
		ge, gerr, gOK = genNext()
		return out, nil, true
	}
	return &indexStream{
		next: next,
		stop: func() {
			genStop()
			sorter.close()
		},
		damaged: func() []string { return append(slices.Clone(segDamaged), gens.Damaged...) },
	}, nil
}

// segmentReader reads uncompacted segments one after the other, in
// memory their sealed bytes only: the body buffer is reused from one segment
// to the next (grown to the listed size first, so that a read does not grow
// it by steps), decrypted in place, and a compressed plaintext is decoded as
// it is walked (once to check it, once more to use it) rather than whole.
type segmentReader struct {
	body    []byte
	payload []byte // the plaintext, or its zstd frame when compressed
	zstd    bool
	dec     *zstd.Decoder
}

func newSegmentReader() (*segmentReader, error) {
	dec, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderLowmem(true),
		zstd.WithDecoderMaxMemory(maxMetaSize))
	if err != nil {
		return nil, fmt.Errorf("blockdiff: zstd: %w", err)
	}
	return &segmentReader{dec: dec}, nil
}

// read reads and unseals the segment at key (listed with size bytes).
func (s *segmentReader) read(ctx context.Context, r *Repository, key string, size int64) error {
	s.payload, s.zstd = nil, false
	if size > 0 && size <= maxMetaSize+1024 && int64(cap(s.body)) < size+1 {
		// +1: the read sees its end without growing; and room for the
		// next segments, which are about as large (2^20 entries each
		// when a cleanup of format 1 or 2 wrote them)
		s.body = make([]byte, 0, min(size+size/16+1, maxMetaSize+1025))
	}
	body, err := r.readInto(ctx, key, s.body, maxMetaSize+1024)
	if err != nil {
		return err
	}
	s.body = body
	payload, flags, err := r.codec.unseal(key, body)
	if err != nil {
		return fmt.Errorf("blockdiff: %w", err)
	}
	s.payload, s.zstd = payload, flags&flagZstd != 0
	return nil
}

// walk calls each (when not nil) with every entry of the segment read; it
// checks the whole encoding and checksum as walkIndex does, but those of a
// compressed segment only at its end: walk it once with nil first.
func (s *segmentReader) walk(each func(indexEntry) error) error {
	if each == nil {
		each = func(indexEntry) error { return nil }
	}
	if !s.zstd {
		return walkIndex(s.payload, nil, each)
	}
	if err := s.dec.Reset(bytes.NewReader(s.payload)); err != nil {
		return fmt.Errorf("zstd: %v: %w", err, ErrCorrupt)
	}
	return walkIndexStream(s.dec, each)
}

func (s *segmentReader) close() {
	if s.dec != nil {
		s.dec.Close()
		s.dec = nil
	}
	s.body, s.payload = nil, nil
}

// walkIndexStream is walkIndex over a stream of a segment's plaintext:
// every read error is damage (the stream decodes bytes held in memory), and
// the checksum is checked at the end.
func walkIndexStream(r io.Reader, each func(indexEntry) error) error {
	th := &tailHasher{h: blake3.New(32, nil)}
	br := bufio.NewReaderSize(io.TeeReader(r, th), 64<<10)
	bad := func(what string, err error) error {
		return fmt.Errorf("index %s: %v: %w", what, err, ErrCorrupt)
	}
	var head [5]byte
	if _, err := io.ReadFull(br, head[:]); err != nil {
		return bad("header", err)
	}
	if !bytes.Equal(head[:4], indexMagic) {
		return fmt.Errorf("bad magic or too short: %w", ErrCorrupt)
	}
	if head[4] != 1 {
		return fmt.Errorf("format %d: %w", head[4], ErrUnsupportedFormat)
	}
	count, err := binary.ReadUvarint(br)
	if err != nil {
		return bad("count", err)
	}
	id := make([]byte, len(ID{})) // one buffer: e.ID[:] given to ReadFull would move every e to the heap
	for range count {
		var e indexEntry
		if _, err := io.ReadFull(br, id); err != nil {
			return bad("entry", err)
		}
		copy(e.ID[:], id)
		stored, err := binary.ReadUvarint(br)
		if err != nil {
			return bad("entry", err)
		}
		length, err := binary.ReadUvarint(br)
		if err != nil {
			return bad("entry", err)
		}
		e.Stored, e.Length = int64(stored&(1<<62-1)), int64(length&(1<<62-1))
		if err := each(e); err != nil {
			return err
		}
	}
	var trailer [32]byte
	if _, err := io.ReadFull(br, trailer[:]); err != nil {
		return bad("trailer", err)
	}
	switch _, err := br.ReadByte(); {
	case err == nil:
		return fmt.Errorf("index has trailing bytes: %w", ErrCorrupt)
	case err != io.EOF:
		return bad("end", err)
	}
	if !bytes.Equal(th.h.Sum(nil), th.tail[:th.n]) || th.n != len(trailer) {
		return fmt.Errorf("checksum mismatch: %w", ErrCorrupt)
	}
	return nil
}

// tailHasher hashes what is written to it but its last 32 bytes, which it
// keeps (a segment's trailer: the checksum of all before it).
type tailHasher struct {
	h    *blake3.Hasher
	tail [32]byte
	n    int
}

func (t *tailHasher) Write(p []byte) (int, error) {
	if len(p) >= len(t.tail) {
		_, _ = t.h.Write(t.tail[:t.n])
		_, _ = t.h.Write(p[:len(p)-len(t.tail)])
		t.n = copy(t.tail[:], p[len(p)-len(t.tail):])
		return len(p), nil
	}
	if drop := t.n + len(p) - len(t.tail); drop > 0 {
		_, _ = t.h.Write(t.tail[:drop])
		copy(t.tail[:], t.tail[drop:t.n])
		t.n -= drop
	}
	t.n += copy(t.tail[t.n:], p)
	return len(p), nil
}

// damagedIndex reads every index object of scan, a segment at a time and a
// pack at a time (as sortedIndex does, without sorting anything), and
// returns the damaged ones. Errors of the store fail it.
func (r *Repository) damagedIndex(ctx context.Context, scan *indexScan) ([]string, error) {
	var damaged []string
	seg, err := newSegmentReader()
	if err != nil {
		return nil, err
	}
	defer seg.close()
	for i, key := range scan.segs {
		err := seg.read(ctx, r, key, scan.segSizes[i])
		if errors.Is(err, objstore.ErrNotExist) {
			continue
		}
		if err == nil {
			err = seg.walk(nil)
		}
		if isDamage(err) {
			r.log.Warn("damaged index segment", "segment", key, "err", err)
			damaged = append(damaged, key)
			continue
		}
		if err != nil {
			return nil, err
		}
	}
	gens := &indexScan{r: r, dirs: scan.dirs, Generations: scan.Generations}
	for _, err := range gens.Entries(ctx) {
		if err != nil {
			return nil, err
		}
	}
	return append(damaged, gens.Damaged...), nil
}
