package objstore

import (
	"io"
	"os"
	"sync"
	"sync/atomic"

	"github.com/cairn-backup/cairn/internal/directio"
)

// fsChunk is the unit in which the file backend writes an object: large
// enough for few system calls, a multiple of every disk's sector.
const fsChunk = 1 << 20

// copyBufs holds copyToFile's buffers, each fsChunk long and 4 KiB-aligned
// so that O_DIRECT accepts them.
var copyBufs = sync.Pool{New: func() any {
	b := directio.Aligned(fsChunk, 0)[:fsChunk]
	return &b
}}

// fsDirectChunks counts the chunks written with O_DIRECT, for tests.
var fsDirectChunks atomic.Int64

// copyToFile copies r into the new, empty file f and returns the bytes
// written. Whole chunks of an object of a MiB or more go through a second
// descriptor opened with O_DIRECT: an object is written once and read back
// rarely, so the page cache's copy and writeback only cost CPU (a backup to
// disk spent a sixth more CPU than the same backup to RAM) and evict the
// node's other pages; the final fsync of the inode covers both descriptors.
// The last, partial chunk, small objects, and file systems without O_DIRECT
// use f. (io.Copy would also have gone through os.File.ReadFrom's 32 KiB
// buffer: the guard's reader hides bytes.Reader's WriteTo.)
func copyToFile(f *os.File, r io.Reader) (int64, error) {
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	buf := *bp
	var direct *os.File
	tried := false
	defer func() {
		if direct != nil {
			direct.Close()
		}
	}()
	var off int64
	for {
		n, rerr := io.ReadFull(r, buf)
		if n == len(buf) && !tried {
			tried = true
			direct = directio.Open(f.Name()) // nil without O_DIRECT
		}
		if n > 0 {
			if err := writeChunk(f, &direct, buf[:n], off); err != nil {
				return off, err
			}
			off += int64(n)
		}
		switch {
		case rerr == io.EOF || rerr == io.ErrUnexpectedEOF:
			return off, nil
		case rerr != nil:
			return off, rerr
		}
	}
}

// writeChunk writes p at off: directly when it is a whole chunk and direct
// is open, else (or when the file system refuses the direct write, which
// then closes direct) through f.
func writeChunk(f *os.File, direct **os.File, p []byte, off int64) error {
	if *direct != nil && len(p) == fsChunk {
		n, err := (*direct).WriteAt(p, off)
		if err == nil {
			fsDirectChunks.Add(1)
			return nil
		}
		if !directio.Refused(n, err) {
			return err
		}
		(*direct).Close()
		*direct = nil
	}
	_, err := f.WriteAt(p, off)
	return err
}
