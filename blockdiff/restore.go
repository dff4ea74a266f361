package blockdiff

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"
	"sync/atomic"
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
	err := r.parallel(ctx, len(v.refs), func(ctx context.Context, i int) error {
		b := <-bufs
		defer func() { bufs <- b }()
		if err := r.restoreBlock(ctx, v, i, offs[i], w, opts.Sparse, b); err != nil {
			return err
		}
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
		b[0], b[1] = make([]byte, 0, sealSize(int(ref.Length))), make([]byte, 0, ref.Length)
	}
	body, err := r.readInto(ctx, key, b[0], MaxBlockSize+1024)
	if err != nil {
		return fmt.Errorf("block at offset %d: %w", off, err)
	}
	b[0] = body
	plain, err := r.codec.open(key, body, b[1], false)
	if err == nil && (int64(len(plain)) != ref.Length || r.codec.hash(plain) != ref.ID) {
		err = fmt.Errorf("content does not match its ID: %w", ErrCorrupt)
	}
	if err != nil {
		return fmt.Errorf("version %s, block at offset %d, object %s: %w", v.ID, off, key, err)
	}
	b[1] = plain
	if _, err := w.WriteAt(plain, off); err != nil {
		return fmt.Errorf("write at offset %d: %w", off, err)
	}
	return nil
}

// writeZeros writes n zero bytes at off.
func writeZeros(w io.WriterAt, off, n int64) error {
	for n > 0 {
		k := min(n, int64(len(zeros)))
		if _, err := w.WriteAt(zeros[:k], off); err != nil {
			return fmt.Errorf("write zeros at offset %d: %w", off, err)
		}
		off, n = off+k, n-k
	}
	return nil
}

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

// RestoreFile restores version id to path (a path or file:// URL): a new file
// is created sparse; an existing regular file is cut to the version's size and
// rewritten; an existing block device must hold at least the version's size.
func (r *Repository) RestoreFile(ctx context.Context, id, path string, opts RestoreFileOptions) error {
	path = strings.TrimPrefix(path, "file://")
	v, lock, err := r.readVersion(ctx, "restore", id, opts.AllowInvalid)
	if err != nil {
		return err
	}
	defer lock.Release(ctx)
	f, sparse, err := openDest(path, v.Size, opts)
	if err != nil {
		return err
	}
	err = r.restoreVersion(ctx, v, f, RestoreOptions{Sparse: sparse, Progress: opts.Progress})
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("blockdiff: close %s: %w", path, cerr)
	}
	return err
}

// openDest opens the destination of a restore and says whether zero blocks
// may be skipped.
func openDest(path string, size int64, opts RestoreFileOptions) (*os.File, bool, error) {
	st, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return nil, false, fmt.Errorf("blockdiff: create %s: %w", path, err)
		}
		if err := f.Truncate(size); err != nil {
			f.Close()
			return nil, false, fmt.Errorf("blockdiff: truncate %s: %w", path, err)
		}
		return f, true, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("blockdiff: stat %s: %w", path, err)
	}
	if !opts.Overwrite {
		return nil, false, fmt.Errorf("blockdiff: %s exists (overwrite it with force): %w", path, fs.ErrExist)
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, false, fmt.Errorf("blockdiff: open %s: %w", path, err)
	}
	if st.Mode().IsRegular() {
		// Sparse: truncating to zero first makes every skipped block a hole
		// that reads as zeros. Otherwise zeros are written, keeping the file
		// allocated (a preallocated VM image stays so).
		err := f.Truncate(size)
		if opts.Sparse {
			err = errors.Join(f.Truncate(0), f.Truncate(size))
		}
		if err != nil {
			f.Close()
			return nil, false, fmt.Errorf("blockdiff: truncate %s: %w", path, err)
		}
		return f, opts.Sparse, nil
	}
	devSize, err := f.Seek(0, io.SeekEnd)
	if err != nil || devSize < size {
		f.Close()
		return nil, false, fmt.Errorf("blockdiff: %s holds %d bytes, the version %d (%v)", path, devSize, size, err)
	}
	return f, opts.Sparse, nil
}
