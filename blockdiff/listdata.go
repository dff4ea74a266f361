package blockdiff

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/cairn-backup/cairn/objstore"
)

// dataObj is one listed data object.
type dataObj struct {
	id   ID
	size int64
	mod  int64 // modification time, Unix nanoseconds
}

func (d dataObj) modTime() time.Time { return time.Unix(0, d.mod) }

const (
	// listConcurrency bounds the data/xx/ prefixes listed at once: 16 for
	// a remote store, whose List is a page of keys at a time and whose
	// latency the parallel listings hide; 4 for a local file store
	// (localStore), whose List of a prefix reads and sorts its whole
	// folder (about 160 bytes an object while it is listed: a data/xx/
	// folder of a 100 TiB repository holds 100k objects) and is bound by
	// the file system's CPU and disk rather than by latency.
	listConcurrency      = 16
	listConcurrencyLocal = 4
	dataObjSize          = 32 + 8 + 8
)

// localStore reports whether s (or a store it wraps: Guard's, or any store
// with an Unwrap() Store method) is the file backend, which alone keeps
// temporary files of its own (objstore.TempRemover).
func localStore(s objstore.Store) bool {
	for s != nil {
		if _, ok := s.(objstore.TempRemover); ok {
			return true
		}
		u, ok := s.(interface{ Unwrap() objstore.Store })
		if !ok {
			return false
		}
		s = u.Unwrap()
	}
	return false
}

// listSpill is how many objects of one prefix a lister keeps in memory
// before it spills them to a temporary file. (A variable for tests.)
var listSpill = 16 << 10

// dataLister lists data/ in ID order: the 256 prefixes data/00/ ..
// data/ff/ are listed in parallel (at most listConcurrency at a time, or
// listConcurrencyLocal for a file store, each
// listed ahead of the consumer holds at most listSpill objects in memory
// and spills the rest to a temporary file) and yielded in prefix order. The
// store's List returns keys in order within a prefix; dataLister checks it
// (an out-of-order listing fails rather than let a merge-join believe an
// object unreferenced). Keys that are not data/xx/<id> are skipped, as
// every maintenance operation skips them.
type dataLister struct {
	ctx    context.Context
	cancel context.CancelFunc
	dir    string
	parts  [256]chan *listPart
	sem    chan struct{}
	free   chan []dataObj // in-memory buffers of parts the consumer is done with
	cur    *listPart
	pos    int // next prefix to yield
	last   ID
	any    bool

	mkdirOnce sync.Once
	tmpDir    string // made by spillDir
	mkdirErr  error
}

// listPart is the listing of one prefix.
type listPart struct {
	file  string // spilled objects (before mem), or ""
	mem   []dataObj
	err   error
	r     *bufio.Reader
	f     *os.File
	inMem int
}

// listData starts listing data/; close the lister when done.
func (r *Repository) listData(ctx context.Context, tmp string) (*dataLister, error) {
	ctx, cancel := context.WithCancel(ctx)
	conc := listConcurrency
	if localStore(r.store) {
		conc = listConcurrencyLocal
	}
	l := &dataLister{ctx: ctx, cancel: cancel, dir: tmp, sem: make(chan struct{}, conc), free: make(chan []dataObj, conc+1)}
	for i := range l.parts {
		l.parts[i] = make(chan *listPart, 1)
	}
	go func() {
		for i := range 256 {
			select {
			case l.sem <- struct{}{}: // released when the consumer is done with the prefix
			case <-ctx.Done():
				for j := i; j < 256; j++ {
					l.parts[j] <- &listPart{err: ctx.Err()}
				}
				return
			}
			var buf []dataObj
			select {
			case buf = <-l.free:
			default:
			}
			go func() { l.parts[i] <- r.listPrefix(ctx, fmt.Sprintf("data/%02x/", i), buf, l.spillDir) }()
		}
	}()
	return l, nil
}

// spillDir returns the lister's temporary directory, made at the first
// spill, so that a small repository needs no writable temporary directory.
func (l *dataLister) spillDir() (string, error) {
	l.mkdirOnce.Do(func() {
		d, err := os.MkdirTemp(l.dir, "cairn-list-")
		if err != nil {
			l.mkdirErr = fmt.Errorf("blockdiff: temporary directory for listing (see --temp-dir): %w", err)
			return
		}
		l.tmpDir = d
	})
	return l.tmpDir, l.mkdirErr
}

// listPrefix lists one prefix into a listPart, its objects in memory in
// buf[:0] (a buffer of a part done with, reused: the buffers of a large
// repository grow to listSpill once) up to listSpill.
func (r *Repository) listPrefix(ctx context.Context, prefix string, buf []dataObj, spillDir func() (string, error)) *listPart {
	p := &listPart{mem: buf[:0]}
	var w *bufio.Writer
	var f *os.File
	var last ID
	n := 0
	fail := func(err error) *listPart {
		if f != nil {
			f.Close()
		}
		p.err = err
		return p
	}
	for info, err := range r.store.List(ctx, prefix) {
		if err != nil {
			return fail(fmt.Errorf("blockdiff: list %s: %w", prefix, err))
		}
		id, ok := parseDataKey(info.Key)
		if !ok {
			continue
		}
		if n > 0 && compareID(id, last) <= 0 {
			return fail(fmt.Errorf("blockdiff: list %s: the store listed %s after %s, out of order", prefix, info.Key, dataKey(last)))
		}
		last = id
		n++
		p.mem = append(p.mem, dataObj{id: id, size: info.Size, mod: info.ModTime.UnixNano()})
		if len(p.mem) < listSpill {
			continue
		}
		if f == nil {
			tmp, err := spillDir()
			if err != nil {
				return fail(err)
			}
			if f, err = os.CreateTemp(tmp, "list-"); err != nil {
				return fail(fmt.Errorf("blockdiff: temporary listing: %w", err))
			}
			p.file = f.Name()
			w = bufio.NewWriterSize(f, 64<<10)
		}
		var b [dataObjSize]byte
		for _, o := range p.mem {
			copy(b[:32], o.id[:])
			binary.BigEndian.PutUint64(b[32:], uint64(o.size))
			binary.BigEndian.PutUint64(b[40:], uint64(o.mod))
			if _, err := w.Write(b[:]); err != nil {
				return fail(fmt.Errorf("blockdiff: write temporary listing: %w", err))
			}
		}
		p.mem = p.mem[:0]
	}
	if f != nil {
		err := w.Flush()
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			p.err = fmt.Errorf("blockdiff: write temporary listing: %w", err)
		}
	}
	return p
}

// next returns the next data object in ID order, false at the end.
func (l *dataLister) next() (dataObj, bool, error) {
	for {
		if l.cur == nil {
			if l.pos == 256 {
				return dataObj{}, false, nil
			}
			select {
			case l.cur = <-l.parts[l.pos]:
			case <-l.ctx.Done():
				return dataObj{}, false, l.ctx.Err()
			}
			l.pos++
			if l.cur.err != nil {
				return dataObj{}, false, l.cur.err
			}
			if l.cur.file != "" {
				f, err := os.Open(l.cur.file)
				if err != nil {
					return dataObj{}, false, fmt.Errorf("blockdiff: temporary listing: %w", err)
				}
				l.cur.f, l.cur.r = f, bufio.NewReaderSize(f, 64<<10)
			}
		}
		o, ok, err := l.cur.next()
		if err != nil {
			return dataObj{}, false, err
		}
		if !ok {
			buf := l.cur.mem[:0]
			l.cur.close()
			l.cur = nil
			select {
			case l.free <- buf: // for the next prefix listed
			default:
			}
			<-l.sem // the next prefix may start
			continue
		}
		if l.any && compareID(o.id, l.last) <= 0 {
			return dataObj{}, false, fmt.Errorf("blockdiff: list data: %s after %s, out of order", o.id, l.last)
		}
		l.last, l.any = o.id, true
		return o, true, nil
	}
}

func (p *listPart) next() (dataObj, bool, error) {
	if p.r != nil {
		var b [dataObjSize]byte
		_, err := io.ReadFull(p.r, b[:])
		if err == nil {
			var o dataObj
			copy(o.id[:], b[:32])
			o.size = int64(binary.BigEndian.Uint64(b[32:]))
			o.mod = int64(binary.BigEndian.Uint64(b[40:]))
			return o, true, nil
		}
		if err != io.EOF {
			return dataObj{}, false, fmt.Errorf("blockdiff: read temporary listing: %w", err)
		}
		p.r = nil
	}
	if p.inMem < len(p.mem) {
		p.inMem++
		return p.mem[p.inMem-1], true, nil
	}
	return dataObj{}, false, nil
}

func (p *listPart) close() {
	if p.f != nil {
		p.f.Close()
		p.f = nil
	}
	if p.file != "" {
		_ = os.Remove(p.file)
	}
	p.mem = nil
}

// close stops the listers and removes the temporary files.
func (l *dataLister) close() {
	l.cancel()
	if l.cur != nil {
		l.cur.close()
		l.cur = nil
	}
	// Take what the listers still deliver (they stop at once: their
	// context is cancelled), so that no file stays behind.
	for ; l.pos < 256; l.pos++ {
		(<-l.parts[l.pos]).close()
		select {
		case <-l.sem:
		default:
		}
	}
	l.mkdirOnce.Do(func() {}) // no directory after this point
	if l.tmpDir != "" {
		_ = os.RemoveAll(l.tmpDir)
	}
}
