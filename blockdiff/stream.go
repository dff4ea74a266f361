package blockdiff

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	_ "github.com/PlakarKorp/go-cdc-chunkers/chunkers/jc" // registers jc-v1.0.0
	"lukechampine.com/blake3"
)

// Chunking algorithms a repository's config may name (ChunkerParams.Algorithm),
// and the go-cdc-chunkers implementation each one is. The mapping is part of
// the format: a name always cuts at the same boundaries.
const (
	// ChunkerFastCDC is FastCDC with normalized chunking (level 2): the
	// cut points of go-cdc-chunkers' "fastcdc-v1.0.0"; the default.
	ChunkerFastCDC = "fastcdc"
	// ChunkerJC is Jump-Condition CDC (Jin et al., IEEE TPDS 2023), a gear
	// chunker that skips ahead after a near-cut: faster, but on dumps with
	// long runs of blanks (pgbench's) it finds few cut points, so its chunks
	// run to the maximum and resynchronise late after a change.
	ChunkerJC = "jc"
)

// DefaultChunker is the chunking of the streams of a new repository: dumps
// change in places, and 1 MiB chunks keep both the dedup of a dump that
// changed by 1% and the object count (about one per MiB) reasonable.
var DefaultChunker = ChunkerParams{Algorithm: ChunkerFastCDC, Min: 256 << 10, Avg: 1 << 20, Max: 4 << 20}

// chunkerImpl maps a config algorithm to the go-cdc-chunkers name.
var chunkerImpl = map[string]string{
	ChunkerJC:      "jc-v1.0.0",
	ChunkerFastCDC: fastCDCName, // cuts as "fastcdc-v1.0.0" does, faster (fastcdc.go)
}

// CheckChunkerParams validates content-defined chunking parameters: a known
// algorithm, a power-of-two average, 64 <= Min < Avg < Max <= MaxBlockSize.
func CheckChunkerParams(p ChunkerParams) error {
	if _, ok := chunkerImpl[p.Algorithm]; !ok {
		return fmt.Errorf("blockdiff: chunker %q: want %q or %q: %w", p.Algorithm, ChunkerJC, ChunkerFastCDC, ErrUnsupportedFormat)
	}
	if p.Min < 64 || p.Min >= p.Avg || p.Avg >= p.Max || p.Max > MaxBlockSize || p.Avg&(p.Avg-1) != 0 {
		return fmt.Errorf("blockdiff: chunker sizes min %d avg %d max %d: want 64 <= min < avg < max <= %d, avg a power of two: %w",
			p.Min, p.Avg, p.Max, MaxBlockSize, ErrUnsupportedFormat)
	}
	return nil
}

// chunkerKey is the key of the gear table of an encrypted repository's
// chunker, derived from the ID key, so that chunk boundaries (and so object
// sizes) do not reveal content to whoever knows the public gear table.
func (c *codec) chunkerKey() []byte {
	if c.idKey == nil {
		return nil
	}
	h := blake3.New(32, c.idKey)
	_, _ = h.Write([]byte("cairn-blockdiff chunker gear key"))
	return h.Sum(nil)
}

// StreamOptions describe one stream backup.
type StreamOptions struct {
	Volume string            // name of the stream (e.g. "pg-main"); required
	Labels map[string]string // stored in the manifest
	// Progress, when set, is called from the reading goroutine with the bytes
	// read from the stream so far.
	Progress func(done int64)
}

// streamJob is one chunk on its way from the cutter to the workers.
type streamJob struct {
	i   int
	buf []byte   // the chunk, in seg
	seg *segment // released once the chunk is hashed and encoded
}

// BackupStream reads src to its end and stores it as a new version of kind
// stream: content-defined chunks (the repository's ChunkerParams), each
// stored once, compressed and encrypted like the blocks of a volume. The
// manifest is written as incomplete first and as valid only after every
// chunk and the index segment are stored. A read error from src, a store
// error or a cancelled ctx leaves the version invalid (best effort) and
// returns an error: no valid version exists then. A Read of src that blocks
// is not interrupted by ctx; readers backed by a process or a connection
// should close themselves when ctx ends (pgdump does).
//
// Memory: at most 3 segments of 5*Max bytes that chunks are cut from in
// place, and 2*Workers+Transfers encode buffers of up to Max bytes,
// whatever the stream's length. Stats.BytesWritten is the stored size of the chunks
// this version added to the repository.
func (r *Repository) BackupStream(ctx context.Context, src io.Reader, opts StreamOptions) (*Version, error) {
	start := time.Now()
	if src == nil {
		return nil, errors.New("blockdiff: backup stream: nil reader")
	}
	bo := BackupOptions{Volume: opts.Volume, Labels: opts.Labels}
	if err := checkBackupOptions(&bo, r.cfg.BlockSize); err != nil {
		return nil, err
	}
	if err := CheckChunkerParams(r.cfg.Chunker); err != nil {
		return nil, err
	}
	lock, err := r.Lock(ctx, LockShared, "stream backup "+opts.Volume) // FORMAT.md, "Locks"
	if err != nil {
		return nil, err
	}
	defer lock.Release(ctx)
	r.upgradeConfig(ctx) // a version-1 encrypted config gets its MAC (config.go)
	if err := r.loadDedup(ctx); err != nil {
		return nil, err
	}
	v := &Version{ID: newVersionID(start), Volume: opts.Volume, Kind: KindStream,
		Created: start.UTC(), Labels: maps.Clone(opts.Labels), Status: StatusIncomplete}
	if v.Labels == nil {
		v.Labels = map[string]string{}
	}
	if err := r.putVersion(ctx, v); err != nil {
		return nil, err
	}
	r.log.Info("stream backup started", "version", v.ID, "volume", v.Volume)
	b := &backupRun{r: r, opts: bo}
	runErr := b.runStream(ctx, src, opts.Progress)
	v.Size = b.bytesRead.Load()
	if runErr == nil {
		runErr = lock.Check()
	}
	return r.finishBackup(ctx, v, b, runErr, start)
}

// runStream is the stream pipeline: the cutter reads and cuts (cut.go),
// workers hash and encode, uploaders store (backupRun.uploader).
func (b *backupRun) runStream(ctx context.Context, src io.Reader, progress func(int64)) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	b.cancel = cancel
	c, err := newCutter(b.r.cfg.Chunker, b.r.codec.chunkerKey())
	if err != nil {
		return err
	}
	w := b.r.opts.Workers
	jobs := make(chan streamJob, w)
	uploads := make(chan upload, w)
	encFree := make(chan []byte, 2*w+b.r.opts.Transfers)
	for range cap(encFree) {
		encFree <- nil // allocated on first use, so small streams stay small
	}
	var refsMu sync.Mutex
	var workers, uploaders sync.WaitGroup
	for range b.r.opts.Transfers {
		uploaders.Go(func() { b.uploader(ctx, uploads, encFree) })
	}
	for range w {
		workers.Go(func() {
			for j := range jobs {
				if ctx.Err() == nil {
					if err := b.streamChunk(ctx, j, &refsMu, uploads, encFree); err != nil {
						b.cancel(err)
					}
				}
				j.seg.release()
			}
		})
	}
	i := 0
	err = c.run(ctx, src, func(seg *segment, chunk []byte) error {
		refsMu.Lock()
		b.refs = append(b.refs, Ref{Length: int64(len(chunk))})
		refsMu.Unlock()
		if d := b.bytesRead.Add(int64(len(chunk))); progress != nil {
			progress(d)
		}
		select {
		case jobs <- streamJob{i: i, buf: chunk, seg: seg}:
			i++
			return nil
		case <-ctx.Done():
			seg.release()
			return context.Cause(ctx)
		}
	})
	if err != nil {
		b.cancel(err)
	}
	close(jobs)
	workers.Wait()
	close(uploads)
	uploaders.Wait()
	if err := context.Cause(ctx); err != nil && ctx.Err() != nil {
		return err
	}
	return b.waitFlights(ctx)
}

// streamChunk hashes one chunk and, when it is new, encodes it for upload.
func (b *backupRun) streamChunk(ctx context.Context, j streamJob, refsMu *sync.Mutex, uploads chan<- upload, free chan []byte) error {
	p := j.buf
	if isZero(p) {
		refsMu.Lock()
		b.refs[j.i].Sparse = true
		refsMu.Unlock()
		b.nSparse.Add(1)
		return nil
	}
	id := b.r.codec.hash(p)
	refsMu.Lock()
	b.refs[j.i].ID = id
	refsMu.Unlock()
	return b.storeNew(ctx, id, p, uploads, free)
}

// StreamRestoreOptions tune RestoreStream.
type StreamRestoreOptions struct {
	// AllowInvalid restores a version that is not valid, for salvage.
	AllowInvalid bool
	// Progress, when set, is called from the writing goroutine with the bytes
	// written so far and the version size.
	Progress func(done, total int64)
}

// fetched is one chunk fetched and verified, waiting for its turn to be written.
type fetched struct {
	b     *[2][]byte // the buffers plain lives in, returned to the pool after the write
	plain []byte
	err   error
}

// RestoreStream writes version id to w in order, fetching up to Transfers
// chunks ahead in parallel and checking each against its ID before writing
// it. It works for versions of either kind (a block version comes out as its
// image). On error, w has received a prefix of the version. It holds a shared
// repository lock meanwhile, as Restore does.
func (r *Repository) RestoreStream(ctx context.Context, id string, w io.Writer, opts StreamRestoreOptions) error {
	v, lock, err := r.readVersion(ctx, "restore", id, opts.AllowInvalid)
	if err != nil {
		return err
	}
	defer lock.Release(ctx)
	if err := r.restoreOrdered(ctx, v, w, opts.Progress); err != nil {
		return fmt.Errorf("blockdiff: restore %s: %w", v.ID, err)
	}
	return nil
}

// restoreOrdered streams v's references to w: a dispatcher starts fetches in
// order, bounded by Transfers buffers; the caller writes results in order.
func (r *Repository) restoreOrdered(ctx context.Context, v *Version, w io.Writer, progress func(done, total int64)) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	n := r.opts.Transfers
	bufs := make(chan *[2][]byte, n)
	for range n {
		bufs <- &[2][]byte{}
	}
	queue := make(chan chan fetched, n)
	var wg sync.WaitGroup
	go func() {
		defer close(queue)
		var off int64
		for i := range v.refs {
			var b *[2][]byte
			select {
			case b = <-bufs:
			case <-ctx.Done():
				return
			}
			res := make(chan fetched, 1)
			select {
			case queue <- res:
			case <-ctx.Done():
				return
			}
			o := off
			off += v.refs[i].Length
			wg.Go(func() {
				plain, err := r.fetchChunk(ctx, v, i, o, b)
				res <- fetched{b: b, plain: plain, err: err}
			})
		}
	}()
	defer wg.Wait()
	var done atomic.Int64
	var firstErr error
	for res := range queue {
		f := <-res
		if firstErr == nil {
			if f.err != nil {
				firstErr = f.err
			} else if _, err := w.Write(f.plain); err != nil {
				firstErr = fmt.Errorf("write at offset %d: %w", done.Load(), err)
			} else if d := done.Add(int64(len(f.plain))); progress != nil {
				progress(d, v.Size)
			}
			if firstErr != nil {
				cancel()
			}
		}
		bufs <- f.b
	}
	if firstErr == nil && ctx.Err() != nil {
		firstErr = ctx.Err()
	}
	return firstErr
}

// fetchChunk fetches and verifies reference i (at offset off) of v; b holds
// reusable fetch and plaintext buffers. A sparse reference yields zeros.
func (r *Repository) fetchChunk(ctx context.Context, v *Version, i int, off int64, b *[2][]byte) ([]byte, error) {
	ref := v.refs[i]
	if ref.Length < 0 || ref.Length > MaxBlockSize {
		return nil, fmt.Errorf("reference %d at offset %d: length %d out of range: %w", i, off, ref.Length, ErrCorrupt)
	}
	if ref.Sparse {
		p := slices.Grow(b[0][:0], int(ref.Length))[:ref.Length]
		clear(p)
		b[0] = p
		return p, nil
	}
	key := dataKey(ref.ID)
	body, err := r.readInto(ctx, key, b[1], MaxBlockSize+1024)
	if err != nil {
		return nil, fmt.Errorf("chunk at offset %d: %w", off, err)
	}
	b[1] = body
	plain, err := r.codec.open(key, body, b[0], false)
	if err == nil && (int64(len(plain)) != ref.Length || r.codec.hash(plain) != ref.ID) {
		err = fmt.Errorf("content does not match its ID: %w", ErrCorrupt)
	}
	if err != nil {
		return nil, fmt.Errorf("version %s, chunk at offset %d, object %s: %w", v.ID, off, key, err)
	}
	b[0] = plain
	return plain, nil
}
