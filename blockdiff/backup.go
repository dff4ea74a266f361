package blockdiff

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"maps"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// BackupOptions describe one backup.
type BackupOptions struct {
	Volume string            // name of the volume; required
	Labels map[string]string // stored in the manifest
	// BlockSize overrides the repository's block size for this version
	// (MinBlockSize..MaxBlockSize, a multiple of 4096); 0 keeps the default.
	// Blocks deduplicate only between versions of the same block size.
	BlockSize int
	Base      string // base version ID for a differential backup, or ""
	// Hints are the extents changed since Base (ParseRBDDiff). nil means no
	// hints: every block is read. A non-nil empty slice means nothing changed.
	Hints []Extent
	// VerifyPercent raises the share of blocks outside the hints that are
	// re-read and checked against the base (default: Benji's sample).
	VerifyPercent float64
	// Progress, when set, is called (from several goroutines) with the bytes
	// of the volume handled so far and the volume size.
	Progress func(done, total int64)
}

// flight is an upload in progress that other blocks may depend on.
type flight struct {
	done chan struct{}
	err  error
}

// backupRun is the state of one running backup.
type backupRun struct {
	r      *Repository
	src    Source
	base   *Version
	opts   BackupOptions
	bs     int64
	refs   []Ref
	cancel context.CancelCauseFunc

	bytesRead, bytesWritten, done       atomic.Int64
	nNew, nSparse, nDedup, nBase, nVeri atomic.Int64

	mu      sync.Mutex
	entries []indexEntry // objects this backup stored
	waits   []*flight    // uploads of other blocks this backup references

	// The index is read at the first lookup (ensureIndex), not before: a
	// backup that stores no block reads none of it.
	indexOnce sync.Once
	indexErr  error
	// Lookups in the compacted index run beside the workers (lookupAside):
	// a worker hands its read buffer over and takes a spare one.
	lookups sync.WaitGroup
	spares  chan []byte
}

type blockJob struct {
	i   int
	act byte
}

type upload struct {
	id   ID
	body []byte
	len  int64
	f    *flight
}

// Backup stores src as a new version of opts.Volume and returns its manifest.
// The manifest is written as incomplete first and as valid only after every
// block and the index segment are stored; on failure it is marked invalid
// (best effort) and no valid version exists.
func (r *Repository) Backup(ctx context.Context, src Source, opts BackupOptions) (*Version, error) {
	start := time.Now()
	if err := checkBackupOptions(&opts, r.cfg.BlockSize); err != nil {
		return nil, err
	}
	if size := src.Size(); size < 0 || size > MaxVolumeSize {
		return nil, fmt.Errorf("blockdiff: backup of %s: the source reports %d bytes: want 0..%d", opts.Volume, size, int64(MaxVolumeSize))
	}
	// The shared lock keeps cleanup out until the manifest is written; the
	// base and the dedup set are read under it (FORMAT.md, "Locks").
	lock, err := r.Lock(ctx, LockShared, "backup "+opts.Volume)
	if err != nil {
		return nil, err
	}
	defer lock.Release(ctx)
	r.upgradeConfig(ctx) // a version-1 encrypted config gets its MAC (config.go)
	base, err := r.backupBase(ctx, opts)
	if err != nil {
		return nil, err
	}
	v := &Version{ID: newVersionID(start), Volume: opts.Volume, Kind: KindBlock, Size: src.Size(),
		BlockSize: opts.BlockSize, Created: start.UTC(), Labels: maps.Clone(opts.Labels),
		Status: StatusIncomplete, Base: opts.Base}
	if v.Labels == nil {
		v.Labels = map[string]string{}
	}
	if err := r.putVersion(ctx, v); err != nil {
		return nil, err
	}
	r.log.Info("backup started", "version", v.ID, "volume", v.Volume, "size", v.Size, "base", v.Base, "hints", opts.Hints != nil)
	b := &backupRun{r: r, src: src, base: base, opts: opts, bs: int64(opts.BlockSize)}
	runErr := b.run(ctx)
	if runErr == nil {
		runErr = lock.Check() // a lost lock may have let a cleanup delete what this version references
	}
	return r.finishBackup(ctx, v, b, runErr, start)
}

// finishBackup writes the index segment and the final manifest.
func (r *Repository) finishBackup(ctx context.Context, v *Version, b *backupRun, runErr error, start time.Time) (*Version, error) {
	wctx := ctx
	if runErr != nil { // still record what was stored, even when ctx was cancelled
		var cancel context.CancelFunc
		wctx, cancel = context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
	}
	if err := r.writeIndex(wctx, b.entries); err != nil && runErr == nil {
		runErr = err
	}
	v.Stats = b.stats(time.Since(start))
	if runErr != nil {
		v.Status, v.Error = StatusFailed, runErr.Error()
		if err := r.putVersion(wctx, v); err != nil {
			r.log.Warn("could not mark the version failed", "version", v.ID, "err", err)
		}
		r.log.Error("backup failed", "version", v.ID, "err", runErr)
		return nil, fmt.Errorf("blockdiff: backup of %s (version %s): %w", v.Volume, v.ID, runErr)
	}
	v.refs, v.Status = b.refs, StatusValid
	if err := r.putVersion(ctx, v); err != nil {
		return nil, err
	}
	r.log.Info("backup done", "version", v.ID, "blocks_new", v.Stats.BlocksNew, "bytes_written", v.Stats.BytesWritten,
		"seconds", v.Stats.DurationSeconds)
	return v, nil
}

// backupBase loads and checks the base version of a differential backup.
func (r *Repository) backupBase(ctx context.Context, opts BackupOptions) (*Version, error) {
	if opts.Base == "" {
		if opts.Hints != nil {
			return nil, errors.New("blockdiff: hints need a base version")
		}
		return nil, nil
	}
	base, err := r.Version(ctx, opts.Base)
	if err != nil {
		return nil, err
	}
	if base.Status != StatusValid || base.Kind != KindBlock {
		return nil, fmt.Errorf("blockdiff: base %s is a %s %s version: %w", base.ID, base.Status, base.Kind, ErrNotValid)
	}
	if base.BlockSize != opts.BlockSize {
		return nil, fmt.Errorf("blockdiff: base %s has block size %d, this backup %d", base.ID, base.BlockSize, opts.BlockSize)
	}
	return base, nil
}

// checkBackupOptions validates the options and fills in the block size.
func checkBackupOptions(opts *BackupOptions, repoBS int) error {
	name := opts.Volume
	if name == "" || len(name) > 255 || strings.ContainsFunc(name, func(c rune) bool { return c < 0x20 || c == 0x7f }) {
		return fmt.Errorf("blockdiff: bad volume name %q: want 1..255 printable bytes", name)
	}
	for k, v := range opts.Labels {
		if err := CheckLabel(k, v); err != nil {
			return err
		}
	}
	for _, h := range opts.Hints {
		if h.Offset < 0 || h.Length < 0 || h.Offset > 1<<62-h.Length {
			return fmt.Errorf("blockdiff: bad hint extent %d+%d", h.Offset, h.Length)
		}
	}
	if opts.BlockSize == 0 {
		opts.BlockSize = repoBS
	}
	return CheckBlockSize(opts.BlockSize)
}

// newVersionID makes a version ID that sorts by creation time and is unique
// without coordination: UTC time to the second, then 32 random bits.
func newVersionID(t time.Time) string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return t.UTC().Format("20060102T150405Z") + "-" + hex.EncodeToString(b)
}

// run executes the pipeline: a producer walks the plan in order, workers read,
// hash and encode, uploaders store. Memory is bounded by the worker and
// upload buffers, whatever the volume size.
func (b *backupRun) run(ctx context.Context) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	b.cancel = cancel
	size := b.src.Size()
	plan := planBlocks(size, b.bs, b.base, b.opts.Hints, b.opts.VerifyPercent)
	b.refs = make([]Ref, len(plan))
	// Buffers: one read buffer per worker, and encode buffers for the blocks
	// being encoded, queued or uploading. That is all the block data a backup
	// holds, whatever the volume size.
	jobs := make(chan blockJob, b.r.opts.Workers)
	uploads := make(chan upload, b.r.opts.Workers)
	free := make(chan []byte, 2*b.r.opts.Workers+b.r.opts.Transfers)
	for range cap(free) {
		free <- nil // allocated on first use, so small volumes stay small
	}
	b.spares = make(chan []byte, max(4, 2*b.r.opts.Workers))
	for range cap(b.spares) {
		b.spares <- nil
	}
	var workers, uploaders sync.WaitGroup
	for range b.r.opts.Transfers {
		uploaders.Go(func() { b.uploader(ctx, uploads, free) })
	}
	for range b.r.opts.Workers {
		workers.Go(func() { b.worker(ctx, jobs, uploads, free) })
	}
	b.produce(ctx, plan, jobs)
	close(jobs)
	workers.Wait()
	b.lookups.Wait()
	close(uploads)
	uploaders.Wait()
	if err := context.Cause(ctx); err != nil && ctx.Err() != nil {
		return err
	}
	return b.waitFlights(ctx)
}

// produce walks the plan, settling copies, sparse blocks and holes itself and
// queueing the blocks that must be read.
func (b *backupRun) produce(ctx context.Context, plan []byte, jobs chan<- blockJob) {
	holes := holeMap{}
	if df, ok := b.src.(DataFinder); ok {
		holes.f = df
	}
	size := b.src.Size()
	for i, act := range plan {
		off, l := blockSpan(i, b.bs, size)
		switch act {
		case actCopy:
			b.refs[i] = b.base.refs[i]
			b.nBase.Add(1)
			b.progress(l)
			continue
		case actSparse:
			b.setSparse(i, l)
			continue
		}
		data, err := holes.hasData(off, off+l)
		if err != nil {
			b.cancel(err)
			return
		}
		if !data {
			if err := b.zeroBlock(i, l, act); err != nil {
				b.cancel(err)
				return
			}
			continue
		}
		select {
		case jobs <- blockJob{i, act}:
		case <-ctx.Done():
			return
		}
	}
}

// zeroBlock records an all-zero block; for a verified block the base must
// agree that it is zero.
func (b *backupRun) zeroBlock(i int, l int64, act byte) error {
	if act == actVerify {
		if !b.base.refs[i].Sparse {
			return b.mismatch(i)
		}
		b.refs[i] = b.base.refs[i]
		b.nVeri.Add(1)
		b.progress(l)
		return nil
	}
	b.setSparse(i, l)
	return nil
}

func (b *backupRun) setSparse(i int, l int64) {
	b.refs[i] = Ref{Length: l, Sparse: true}
	b.nSparse.Add(1)
	b.progress(l)
}

func (b *backupRun) progress(l int64) {
	d := b.done.Add(l)
	if b.opts.Progress != nil {
		b.opts.Progress(d, b.src.Size())
	}
}

// mismatch is the error of a verified block that differs from the base.
func (b *backupRun) mismatch(i int) error {
	off, _ := blockSpan(i, b.bs, b.src.Size())
	return fmt.Errorf("block %d at offset %d differs from base %s: %w", i, off, b.base.ID, ErrHintMismatch)
}

// worker reads, hashes and, for new blocks, encodes.
func (b *backupRun) worker(ctx context.Context, jobs <-chan blockJob, uploads chan<- upload, free chan []byte) {
	buf := make([]byte, b.bs)
	for j := range jobs {
		if ctx.Err() != nil {
			continue
		}
		next, err := b.block(ctx, j, buf, uploads, free)
		if err != nil {
			b.cancel(err)
		}
		buf = next
	}
}

// block handles one block that must be read. It returns the buffer the
// worker reads its next block into: buf, or a spare when buf went to a
// lookup beside the workers (lookupAside).
func (b *backupRun) block(ctx context.Context, j blockJob, buf []byte, uploads chan<- upload, free chan []byte) (next []byte, err error) {
	off, l := blockSpan(j.i, b.bs, b.src.Size())
	p := buf[:l]
	if n, err := b.src.ReadAt(p, off); n < len(p) {
		if err == nil || err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return buf, fmt.Errorf("read source at %d: %w", off, err)
	}
	b.bytesRead.Add(l)
	if isZero(p) {
		return buf, b.zeroBlock(j.i, l, j.act)
	}
	id := b.r.codec.hash(p)
	if j.act == actVerify { // the base's object exists: nothing to store
		defer b.progress(l)
		if b.base.refs[j.i].Sparse || b.base.refs[j.i].ID != id {
			return buf, b.mismatch(j.i)
		}
		b.refs[j.i] = b.base.refs[j.i]
		b.nVeri.Add(1)
		return buf, nil
	}
	b.refs[j.i] = Ref{ID: id, Length: l}
	if err := b.ensureIndex(ctx); err != nil {
		return buf, err
	}
	isNew, f, lookup := b.r.claim(id)
	if lookup {
		return b.lookupAside(ctx, id, buf, p, uploads, free)
	}
	defer b.progress(l)
	return buf, b.store(ctx, id, p, isNew, f, uploads, free)
}

// lookupAside looks id up in the compacted index beside the workers, so
// that hashing and compression do not wait for a frame read: the worker's
// buffer goes with the lookup, which stores the block itself in the rare
// case that the filter was wrong, and returns the buffer to the spares. The
// worker waits only when every spare is out (at most max(4, 2*Workers)
// lookups in flight, one block buffer each, allocated on first use).
func (b *backupRun) lookupAside(ctx context.Context, id ID, buf, p []byte, uploads chan<- upload, free chan []byte) ([]byte, error) {
	var next []byte
	select {
	case next = <-b.spares:
	case <-ctx.Done():
		return buf, context.Cause(ctx)
	}
	if next == nil {
		next = make([]byte, b.bs)
	}
	b.lookups.Go(func() {
		defer func() { b.spares <- buf }() // p is a prefix of buf: free once stored or known
		defer b.progress(int64(len(p)))
		if err := b.storeLooked(ctx, id, p, uploads, free); err != nil {
			b.cancel(err)
		}
	})
	return next, nil
}

// ensureIndex reads the index (refreshDedup) once per backup, at its first
// lookup.
func (b *backupRun) ensureIndex(ctx context.Context) error {
	b.indexOnce.Do(func() { b.indexErr = b.r.loadDedup(ctx) })
	return b.indexErr
}

// storeNew claims id in the dedup set and, when no other block or chunk has
// stored or is storing it, encodes p and queues its upload; a known id only
// waits for the upload in flight. Block and stream backups share it.
func (b *backupRun) storeNew(ctx context.Context, id ID, p []byte, uploads chan<- upload, free chan []byte) error {
	if err := b.ensureIndex(ctx); err != nil {
		return err
	}
	isNew, f, lookup := b.r.claim(id)
	if lookup {
		return b.storeLooked(ctx, id, p, uploads, free)
	}
	return b.store(ctx, id, p, isNew, f, uploads, free)
}

// storeLooked is storeNew for an ID that a compacted generation's filter
// may hold: the frame decides.
func (b *backupRun) storeLooked(ctx context.Context, id ID, p []byte, uploads chan<- upload, free chan []byte) error {
	found, err := b.r.inGenerations(ctx, id)
	if err != nil {
		return err
	}
	if found {
		b.nDedup.Add(1)
		return nil
	}
	isNew, f := b.r.claimAfterLookup(id)
	return b.store(ctx, id, p, isNew, f, uploads, free)
}

// store ends a claim: a new id is encoded and queued for upload, a known one
// counted (and its flight, if any, waited for at the end).
func (b *backupRun) store(ctx context.Context, id ID, p []byte, isNew bool, f *flight, uploads chan<- upload, free chan []byte) error {
	if !isNew {
		b.nDedup.Add(1)
		if f != nil {
			b.mu.Lock()
			b.waits = append(b.waits, f)
			b.mu.Unlock()
		}
		return nil
	}
	var enc []byte
	select {
	case enc = <-free:
	case <-ctx.Done():
		b.r.land(id, f, context.Cause(ctx))
		return context.Cause(ctx)
	}
	if cap(enc) < sealSize(len(p)) {
		enc = make([]byte, 0, sealSize(len(p)))
	}
	enc = b.r.codec.seal(enc, dataKey(id), p, true)
	select {
	case uploads <- upload{id: id, body: enc, len: int64(len(p)), f: f}:
		return nil
	case <-ctx.Done():
		free <- enc
		b.r.land(id, f, context.Cause(ctx))
		return context.Cause(ctx)
	}
}

// uploader stores encoded blocks and returns their buffers to the pool.
func (b *backupRun) uploader(ctx context.Context, uploads <-chan upload, free chan<- []byte) {
	for u := range uploads {
		err := context.Cause(ctx)
		if ctx.Err() == nil {
			key := dataKey(u.id)
			if err = b.r.store.Put(ctx, key, bytes.NewReader(u.body), int64(len(u.body))); err != nil {
				err = fmt.Errorf("put %s: %w", key, err)
			}
		}
		stored := int64(len(u.body))
		free <- u.body
		b.r.land(u.id, u.f, err)
		if err != nil {
			b.cancel(err)
			continue
		}
		b.nNew.Add(1)
		b.bytesWritten.Add(stored)
		b.mu.Lock()
		b.entries = append(b.entries, indexEntry{ID: u.id, Stored: stored, Length: u.len})
		b.mu.Unlock()
	}
}

// waitFlights waits for uploads by concurrent backups that this one
// references, and fails if any of them failed.
func (b *backupRun) waitFlights(ctx context.Context) error {
	for _, f := range b.waits {
		select {
		case <-f.done:
			if f.err != nil {
				return fmt.Errorf("a block this backup shares failed to upload: %w", f.err)
			}
		case <-ctx.Done():
			return context.Cause(ctx)
		}
	}
	return nil
}

// stats collects the counters into a Stats.
func (b *backupRun) stats(d time.Duration) Stats {
	return Stats{
		BytesRead: b.bytesRead.Load(), BytesWritten: b.bytesWritten.Load(),
		BlocksTotal: int64(len(b.refs)), BlocksNew: b.nNew.Load(), BlocksSparse: b.nSparse.Load(),
		BlocksDeduped: b.nDedup.Load(), BlocksFromBase: b.nBase.Load(), BlocksVerified: b.nVeri.Load(),
		DurationSeconds: d.Seconds(),
	}
}

var zeros [64 << 10]byte

// isZero reports whether p is all zero bytes, 64 KiB at a time with the
// vectorised bytes.Equal.
func isZero(p []byte) bool {
	for len(p) > 0 {
		n := min(len(p), len(zeros))
		if !bytes.Equal(p[:n], zeros[:n]) {
			return false
		}
		p = p[n:]
	}
	return true
}
