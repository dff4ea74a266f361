package blockdiff

import (
	"os"
	"sync"
	"sync/atomic"

	"github.com/cairn-backup/cairn/internal/directio"
)

// directAlign is the alignment of O_DIRECT writes.
const directAlign = directio.Align

// directWriter writes a restore's aligned blocks with O_DIRECT and the rest
// (a last block of odd length) through the page cache. Restored blocks are
// read once and never again by this process, so the page cache only costs:
// copying 4 MiB into it and writing it back takes about four times the CPU
// of a direct write (dd on ext4 here: 1.8 against 0.4 CPU-s for 2 GiB), and
// on a two-core machine a restore to disk is bound by that CPU. It also
// keeps a restore of a large volume from evicting the page cache of
// everything else on the node.
type directWriter struct {
	f       *os.File     // buffered: unaligned writes, fsync
	direct  *os.File     // the same file opened with O_DIRECT
	off     atomic.Bool  // set when the file system refused an O_DIRECT write
	bufs    sync.Pool    // aligned copies of unaligned memory, *[]byte
	nDirect atomic.Int64 // direct writes, for tests
}

// openDirect opens f's file again with O_DIRECT. It returns nil when the
// system or the file system does not support it, and the restore writes
// through f alone.
func openDirect(f *os.File) *directWriter {
	direct := directio.Open(f.Name())
	if direct == nil {
		return nil
	}
	return &directWriter{f: f, direct: direct}
}

// WriteAt writes p at off, directly when both are aligned.
func (d *directWriter) WriteAt(p []byte, off int64) (int, error) {
	if d.off.Load() || off%directAlign != 0 || len(p)%directAlign != 0 || len(p) == 0 {
		return d.f.WriteAt(p, off)
	}
	src := p
	if !directio.IsAligned(p) {
		// An object stored uncompressed is decrypted in place behind its
		// header: copy it to aligned memory (a memcpy, far cheaper than
		// the page cache's copy and writeback).
		bp := d.alignedBuf(len(p))
		defer d.bufs.Put(bp)
		src = (*bp)[:len(p)]
		copy(src, p)
	}
	n, err := d.direct.WriteAt(src, off)
	if directio.Refused(n, err) {
		d.off.Store(true)
		return d.f.WriteAt(p, off)
	}
	d.nDirect.Add(1)
	return n, err
}

// alignedBuf returns a pooled buffer of at least n bytes whose first byte
// is directAlign-aligned.
func (d *directWriter) alignedBuf(n int) *[]byte {
	if bp, ok := d.bufs.Get().(*[]byte); ok && len(*bp) >= n {
		return bp
	}
	b := directio.Aligned(n, 0)[:n]
	return &b
}

// Close closes the O_DIRECT descriptor; the buffered one stays with its
// owner.
func (d *directWriter) Close() error { return d.direct.Close() }
