// Package directio holds what writing around the page cache takes: opening
// a file again with O_DIRECT, memory aligned for it, telling a refused
// write, and starting write-out early. Restores (blockdiff) and the file
// backend (objstore) write data that is not read back soon, where the page
// cache's copy and writeback only cost CPU and evict the node's other
// pages. Where O_DIRECT does not exist (outside Linux) Open returns nil and
// every write goes through the page cache.
package directio

import (
	"errors"
	"os"
	"syscall"
	"unsafe"
)

// Align is the alignment of O_DIRECT writes: offset, length and memory.
// 4096 covers disks with 512-byte and 4 KiB logical sectors.
const Align = 4096

// Open opens path again for writing with O_DIRECT, or returns nil where
// the system or the file system does not support it.
func Open(path string) *os.File {
	if oDirect == 0 {
		return nil
	}
	f, err := os.OpenFile(path, os.O_WRONLY|oDirect, 0)
	if err != nil {
		return nil
	}
	return f
}

// Aligned returns an empty slice of capacity n whose byte at off is
// Align-aligned.
func Aligned(n, off int) []byte {
	raw := make([]byte, n+Align)
	skip := (Align - (int(uintptr(unsafe.Pointer(&raw[0])))+off)%Align) % Align
	return raw[skip:skip]
}

// IsAligned reports whether p starts on an Align boundary.
func IsAligned(p []byte) bool {
	return uintptr(unsafe.Pointer(unsafe.SliceData(p)))%Align == 0
}

// Refused reports whether a direct write that wrote n bytes and returned
// err was refused by a file system that accepted O_DIRECT at open: the
// caller writes through the page cache instead, from then on.
func Refused(n int, err error) bool {
	return n == 0 && errors.Is(err, syscall.EINVAL)
}
