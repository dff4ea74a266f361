package objstore

import (
	"errors"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"unsafe"
)

// fsChunk is the unit in which the file backend writes an object: large
// enough for few system calls, a multiple of every disk's sector.
const fsChunk = 1 << 20

// copyBufs holds copyToFile's buffers, each fsChunk long and 4 KiB-aligned
// so that O_DIRECT accepts them.
var copyBufs = sync.Pool{New: func() any {
	raw := make([]byte, fsChunk+4096)
	skip := (4096 - int(uintptr(unsafe.Pointer(&raw[0]))%4096)) % 4096
	b := raw[skip : skip+fsChunk]
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
	tried := oDirect == 0 // no O_DIRECT on this system
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
			if d, err := os.OpenFile(f.Name(), os.O_WRONLY|oDirect, 0); err == nil {
				direct = d
			}
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
		if !errors.Is(err, syscall.EINVAL) || n != 0 {
			return err
		}
		(*direct).Close()
		*direct = nil
	}
	_, err := f.WriteAt(p, off)
	return err
}
