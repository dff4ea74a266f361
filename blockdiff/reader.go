package blockdiff

import (
	"container/list"
	"context"
	"fmt"
	"io"
	"sort"
	"sync"
)

// ReaderOptions tune OpenVersion.
type ReaderOptions struct {
	// AllowInvalid opens a version that is not valid (reads of damaged
	// blocks still fail).
	AllowInvalid bool
	// CacheBlocks is how many decoded blocks the reader keeps; 0 means 8.
	CacheBlocks int
}

// VersionReader reads a version's bytes at any offset, fetching, verifying
// and caching blocks on demand: the device behind an NBD export. It is safe
// for concurrent use.
type VersionReader struct {
	r    *Repository
	ctx  context.Context
	lock *Lock // shared, so that no cleanup deletes blocks while the reader is open
	v    *Version
	offs []int64 // offset of each reference; offs[len] = size

	mu    sync.Mutex
	cache map[ID]*list.Element // of *cached
	lru   *list.List           // front = most recently used
	max   int
}

// cached is a block being fetched or fetched.
type cached struct {
	id    ID
	ready chan struct{}
	data  []byte
	err   error
}

// OpenVersion returns a reader of version id, holding a shared repository
// lock until Close (unless Options.NoReadLock). Blocks are read with ctx,
// which should live as long as the reader is used.
func (r *Repository) OpenVersion(ctx context.Context, id string, opts ReaderOptions) (*VersionReader, error) {
	v, lock, err := r.readVersion(ctx, "read", id, opts.AllowInvalid)
	if err != nil {
		return nil, err
	}
	offs := make([]int64, len(v.refs)+1)
	for i, ref := range v.refs {
		offs[i+1] = offs[i] + ref.Length
	}
	if offs[len(v.refs)] != v.Size {
		_ = lock.Release(ctx)
		return nil, fmt.Errorf("blockdiff: open %s: references cover %d bytes of %d: %w", id, offs[len(v.refs)], v.Size, ErrNotValid)
	}
	n := opts.CacheBlocks
	if n <= 0 {
		n = 8
	}
	return &VersionReader{r: r, ctx: ctx, lock: lock, v: v, offs: offs, cache: map[ID]*list.Element{}, lru: list.New(), max: n}, nil
}

// Close releases the reader's repository lock. Reads after Close still work
// but no longer keep a cleanup away.
func (vr *VersionReader) Close() error { return vr.lock.Release(vr.ctx) }

// Size returns the version's size in bytes.
func (vr *VersionReader) Size() int64 { return vr.v.Size }

// Version returns the version's manifest.
func (vr *VersionReader) Version() *Version { return vr.v }

// ReadAt reads len(p) bytes at off, verifying every block it fetches
// against its ID. Reads past the end return io.EOF with the bytes before it.
func (vr *VersionReader) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("blockdiff: read at negative offset %d", off)
	}
	n := 0
	for n < len(p) {
		pos := off + int64(n)
		if pos >= vr.v.Size {
			return n, io.EOF
		}
		i := sort.Search(len(vr.v.refs), func(i int) bool { return vr.offs[i+1] > pos })
		ref := vr.v.refs[i]
		in := pos - vr.offs[i]
		want := min(int64(len(p)-n), ref.Length-in)
		if ref.Sparse {
			clear(p[n : n+int(want)])
		} else {
			data, err := vr.block(ref, vr.offs[i])
			if err != nil {
				return n, err
			}
			copy(p[n:n+int(want)], data[in:])
		}
		n += int(want)
	}
	return n, nil
}

// block returns the verified plaintext of ref, from the cache or the store;
// concurrent readers of one block share one fetch.
func (vr *VersionReader) block(ref Ref, off int64) ([]byte, error) {
	vr.mu.Lock()
	if el, ok := vr.cache[ref.ID]; ok {
		vr.lru.MoveToFront(el)
		c := el.Value.(*cached)
		vr.mu.Unlock()
		<-c.ready
		return c.data, c.err
	}
	c := &cached{id: ref.ID, ready: make(chan struct{})}
	vr.cache[ref.ID] = vr.lru.PushFront(c)
	for vr.lru.Len() > vr.max {
		old := vr.lru.Back()
		vr.lru.Remove(old)
		delete(vr.cache, old.Value.(*cached).id)
	}
	vr.mu.Unlock()

	c.data, c.err = vr.fetch(ref, off)
	if c.err != nil { // do not cache failures
		vr.mu.Lock()
		if el, ok := vr.cache[ref.ID]; ok && el.Value.(*cached) == c {
			vr.lru.Remove(el)
			delete(vr.cache, ref.ID)
		}
		vr.mu.Unlock()
	}
	close(c.ready)
	return c.data, c.err
}

// fetch reads, decodes and verifies one block, as Restore does.
func (vr *VersionReader) fetch(ref Ref, off int64) ([]byte, error) {
	key := dataKey(ref.ID)
	body, err := vr.r.readInto(vr.ctx, key, nil, MaxBlockSize*4+1024)
	if err != nil {
		return nil, fmt.Errorf("blockdiff: version %s, block at offset %d: %w", vr.v.ID, off, err)
	}
	plain, err := vr.r.codec.open(key, body, nil, false)
	if err == nil && (int64(len(plain)) != ref.Length || vr.r.codec.hash(plain) != ref.ID) {
		err = fmt.Errorf("content does not match its ID: %w", ErrCorrupt)
	}
	if err != nil {
		return nil, fmt.Errorf("blockdiff: version %s, block at offset %d, object %s: %w", vr.v.ID, off, key, err)
	}
	return plain, nil
}
