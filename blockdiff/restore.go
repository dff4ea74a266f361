package blockdiff

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/cairn-backup/cairn/internal/directio"
)

// RestoreOptions tune a restore.
type RestoreOptions struct {
	// Sparse skips writing all-zero blocks: the destination must already read
	// as zeros there (a new or truncated file, a thin or zeroed device).
	Sparse bool
	// AllowInvalid restores a version that is not valid, for salvage.
	AllowInvalid bool
	// Progress, when set, is called (from several goroutines) with the bytes
	// restored so far and the version size.
	Progress func(done, total int64)
}

// Restore writes version id to w, fetching blocks in parallel and checking
// each against its ID before writing it. A mismatch stops the restore with an
// error that names the version, the offset and the object. It holds a shared
// repository lock meanwhile, so that no cleanup deletes what it still needs
// (unless Options.NoReadLock).
func (r *Repository) Restore(ctx context.Context, id string, w io.WriterAt, opts RestoreOptions) error {
	v, lock, err := r.readVersion(ctx, "restore", id, opts.AllowInvalid)
	if err != nil {
		return err
	}
	defer lock.Release(ctx)
	return r.restoreVersion(ctx, v, w, opts)
}

// restoreVersion writes every block of v to w.
func (r *Repository) restoreVersion(ctx context.Context, v *Version, w io.WriterAt, opts RestoreOptions) error {
	offs := make([]int64, len(v.refs))
	var off int64
	for i, ref := range v.refs {
		offs[i] = off
		off += ref.Length
	}
	var done atomic.Int64
	bufs := make(chan *[2][]byte, r.opts.Transfers)
	for range cap(bufs) {
		bufs <- &[2][]byte{}
	}
	wb := newWriteback(w, offs, off)
	err := r.parallel(ctx, len(v.refs), func(ctx context.Context, i int) error {
		b := <-bufs
		defer func() { bufs <- b }()
		if err := r.restoreBlock(ctx, v, i, offs[i], w, opts.Sparse, b); err != nil {
			return err
		}
		wb.written(i)
		d := done.Add(v.refs[i].Length)
		if opts.Progress != nil {
			opts.Progress(d, v.Size)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("blockdiff: restore %s: %w", v.ID, err)
	}
	return nil
}

// writebackChunk is how much of a restored file is handed to the kernel's
// writeback at once.
const writebackChunk = 32 << 20

// writeback starts the write-out of a file destination's dirty pages while
// the restore goes on, a contiguous range of at least writebackChunk at a
// time as soon as every block in it was written (sync_file_range, which
// returns without waiting for the disk). Without it the kernel starts only
// at dirty_background_ratio (10% of memory, more than many volumes), so the
// final fsync would write nearly everything after the last block was
// decoded; with it decoding and the disk overlap, and the fsync waits for
// the last chunk only. It holds the blocks finished ahead of the first
// unfinished one: at most Transfers of them.
type writeback struct {
	fd      int
	offs    []int64
	size    int64
	mu      sync.Mutex
	next    int              // the first block not written yet
	ahead   map[int]struct{} // blocks past next already written
	started int64            // write-out started below this offset
}

// newWriteback returns a writeback for an *os.File (for a directWriter,
// whose unaligned writes go through the page cache: its buffered file), or
// nil.
func newWriteback(w io.WriterAt, offs []int64, size int64) *writeback {
	f, ok := w.(*os.File)
	if dw, isDirect := w.(*directWriter); isDirect {
		f, ok = dw.f, true
	}
	if !ok {
		return nil
	}
	return &writeback{fd: int(f.Fd()), offs: offs, size: size, ahead: map[int]struct{}{}}
}

// written records that block i is in the page cache.
func (wb *writeback) written(i int) {
	if wb == nil {
		return
	}
	wb.mu.Lock()
	if i != wb.next {
		wb.ahead[i] = struct{}{}
		wb.mu.Unlock()
		return
	}
	wb.next++
	for {
		if _, ok := wb.ahead[wb.next]; !ok {
			break
		}
		delete(wb.ahead, wb.next)
		wb.next++
	}
	hi := wb.size
	if wb.next < len(wb.offs) {
		hi = wb.offs[wb.next]
	}
	lo := wb.started
	if hi-lo < writebackChunk && wb.next < len(wb.offs) {
		wb.mu.Unlock()
		return
	}
	wb.started = hi
	wb.mu.Unlock()
	directio.StartWriteback(wb.fd, lo, hi-lo)
}

// restoreBlock fetches, verifies and writes block i; b holds the worker's
// reusable fetch and plaintext buffers.
func (r *Repository) restoreBlock(ctx context.Context, v *Version, i int, off int64, w io.WriterAt, sparse bool, b *[2][]byte) error {
	ref := v.refs[i]
	if ref.Sparse {
		if sparse || ref.Length == 0 {
			return nil
		}
		return writeZeros(w, off, ref.Length)
	}
	key := dataKey(ref.ID)
	if cap(b[0]) < sealSize(int(ref.Length)) { // size the worker's buffers once
		// Aligned where a plaintext lands (an uncompressed object's,
		// decrypted in place behind its header, or a decoded one), so that
		// a directWriter writes it without a copy.
		b[0] = directio.Aligned(sealSize(int(ref.Length)), r.codec.headerLen())
		b[1] = directio.Aligned(int(ref.Length), 0)
	}
	body, err := r.readInto(ctx, key, b[0], MaxBlockSize+1024)
	if err != nil {
		return fmt.Errorf("block at offset %d: %w", off, err)
	}
	b[0] = body
	// An object stored without compression is its own plaintext once
	// decrypted in place: no copy.
	plain, inPlace, err := r.codec.openData(key, body, b[1])
	if err == nil && (int64(len(plain)) != ref.Length || r.codec.hash(plain) != ref.ID) {
		err = fmt.Errorf("content does not match its ID: %w", ErrCorrupt)
	}
	if err != nil {
		return fmt.Errorf("version %s, block at offset %d, object %s: %w", v.ID, off, key, err)
	}
	if !inPlace {
		b[1] = plain
	}
	if _, err := w.WriteAt(plain, off); err != nil {
		return fmt.Errorf("write at offset %d: %w", off, err)
	}
	return nil
}

// writeZeros writes n zero bytes at off, a MiB at a time.
func writeZeros(w io.WriterAt, off, n int64) error {
	for n > 0 {
		k := min(n, int64(len(bigZeros)))
		if _, err := w.WriteAt(bigZeros[:k], off); err != nil {
			return fmt.Errorf("write zeros at offset %d: %w", off, err)
		}
		off, n = off+k, n-k
	}
	return nil
}

// bigZeros is the source of writeZeros.
var bigZeros = make([]byte, 1<<20)

// RestoreFileOptions tune RestoreFile.
type RestoreFileOptions struct {
	// Overwrite allows an existing file or device as the destination.
	Overwrite bool
	// Sparse skips writing zero blocks to an existing destination: a regular
	// file is emptied first so they become holes; a block device must already
	// read as zeros there. Without it, zeros are written (as Benji does). A
	// new file is always created sparse.
	Sparse bool
	// AllowInvalid restores a version that is not valid.
	AllowInvalid bool
	// Progress is passed to Restore.
	Progress func(done, total int64)
}

// RestoreFile restores version id to path (a path or file:// URL). A file
// destination, new or existing, is written under a temporary name in the
// same directory and renamed over path only once every block was verified
// and synced, so a failed restore leaves no file that looks restored (and an
// existing file as it was). The hidden temporary of a restore that was
// killed is removed by the next restore to the same path, once no process
// holds it and it is a minute old. An existing block device must hold at least the
// version's size; when a restore to it fails, the error says the device
// holds partial data.
func (r *Repository) RestoreFile(ctx context.Context, id, path string, opts RestoreFileOptions) error {
	path = strings.TrimPrefix(path, "file://")
	v, lock, err := r.readVersion(ctx, "restore", id, opts.AllowInvalid)
	if err != nil {
		return err
	}
	defer lock.Release(ctx)
	d, err := openDest(path, v.Size, opts)
	if err != nil {
		return err
	}
	if d.tmp != "" {
		for _, stale := range removeStaleTemps(d.final, d.tmp) {
			r.log.Info("removed the temporary file of an interrupted restore", "file", stale)
		}
	}
	var w io.WriterAt = d.f
	if dw := openDirect(d.f); dw != nil {
		w = dw
		defer dw.Close()
	}
	err = r.restoreVersion(ctx, v, w, RestoreOptions{Sparse: d.sparse, Progress: opts.Progress})
	if err == nil { // one fsync of the inode covers the direct writes too (and the disk's cache)
		if err = d.f.Sync(); err != nil {
			err = fmt.Errorf("blockdiff: fsync %s: %w", d.f.Name(), err)
		}
	}
	if cerr := d.f.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("blockdiff: close %s: %w", d.f.Name(), cerr)
	}
	if d.tmp == "" { // a device, written in place
		if err != nil {
			return fmt.Errorf("blockdiff: restore of %s to %s failed; the device now holds partial data: %w", id, path, err)
		}
		return nil
	}
	if err == nil {
		if err = os.Rename(d.tmp, d.final); err == nil {
			err = syncDir(filepath.Dir(d.final))
		}
	}
	if err != nil {
		os.Remove(d.tmp)
		return fmt.Errorf("blockdiff: restore of %s to %s failed (%s left as it was): %w", id, path, path, err)
	}
	return nil
}

// restoreDest is an open restore destination.
type restoreDest struct {
	f      *os.File
	sparse bool   // zero blocks may be skipped
	tmp    string // the temporary file of a file destination; "" for a device
	final  string // the path tmp is renamed to
}

// openDest opens the destination of a restore: a temporary file next to a
// file destination, or the device itself.
func openDest(path string, size int64, opts RestoreFileOptions) (*restoreDest, error) {
	final := path
	st, err := os.Stat(path)
	existed := err == nil
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("blockdiff: stat %s: %w", path, err)
	case !opts.Overwrite:
		return nil, fmt.Errorf("blockdiff: %s exists (overwrite it with force): %w", path, fs.ErrExist)
	case st.Mode().IsRegular():
		if final, err = filepath.EvalSymlinks(path); err != nil { // replace a link's target, not the link
			return nil, fmt.Errorf("blockdiff: resolve %s: %w", path, err)
		}
	default:
		return openDevice(path, size, opts)
	}
	f, err := os.CreateTemp(filepath.Dir(final), tempPrefix(final)+"*")
	if err != nil {
		return nil, fmt.Errorf("blockdiff: create a temporary file next to %s: %w", path, err)
	}
	// Held until the process ends, however it ends: the next restore to
	// this path can tell a killed restore's temporary from a live one's.
	// Where the file system has no locks, nothing is ever removed.
	_ = lockFile(f)
	if existed {
		err = f.Chmod(st.Mode().Perm())
	}
	if err == nil {
		err = f.Truncate(size)
	}
	if err != nil {
		f.Close()
		os.Remove(f.Name())
		return nil, fmt.Errorf("blockdiff: prepare %s: %w", f.Name(), err)
	}
	// A new file reads as zeros: zero blocks become holes. Replacing an
	// existing file without Sparse writes them, keeping it allocated as a
	// preallocated VM image was.
	return &restoreDest{f: f, sparse: !existed || opts.Sparse, tmp: f.Name(), final: final}, nil
}

// tempPrefix starts the names of the temporary files of restores to final.
func tempPrefix(final string) string { return "." + filepath.Base(final) + ".cairn-restore-" }

// staleAge is how old a restore's temporary file must be before another
// restore may remove it: the time between its creation and its lock.
const staleAge = time.Minute

// removeStaleTemps removes the temporary files that killed restores to
// final left beside it (every live restore holds a lock on its own; the
// kernel drops it with the process) and returns their names. Only names
// made by tempPrefix are considered, never keep, and only files older than
// staleAge, so that one just created and not yet locked is left alone.
func removeStaleTemps(final, keep string) []string {
	dir, prefix := filepath.Dir(final), tempPrefix(final)
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	var removed []string
	for _, e := range entries {
		name := filepath.Join(dir, e.Name())
		if !strings.HasPrefix(e.Name(), prefix) || name == keep || !e.Type().IsRegular() {
			continue
		}
		if info, err := e.Info(); err != nil || time.Since(info.ModTime()) < staleAge {
			continue
		}
		f, err := os.Open(name)
		if err != nil {
			continue
		}
		if lockFile(f) == nil && os.Remove(name) == nil {
			removed = append(removed, name)
		}
		f.Close()
	}
	return removed
}

// lockFile takes an exclusive lock on f without waiting; it fails when
// another open file description holds one.
func lockFile(f *os.File) error {
	return syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
}

// openDevice opens an existing device (anything not a regular file) for a
// restore in place.
func openDevice(path string, size int64, opts RestoreFileOptions) (*restoreDest, error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("blockdiff: open %s: %w", path, err)
	}
	devSize, err := f.Seek(0, io.SeekEnd)
	if err != nil || devSize < size {
		f.Close()
		return nil, fmt.Errorf("blockdiff: %s holds %d bytes, the version %d (%v)", path, devSize, size, err)
	}
	return &restoreDest{f: f, sparse: opts.Sparse}, nil
}

// syncDir fsyncs a directory, so that a rename in it is durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("blockdiff: open folder %s: %w", dir, err)
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("blockdiff: fsync folder %s: %w", dir, err)
	}
	return nil
}
