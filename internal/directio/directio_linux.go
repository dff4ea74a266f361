package directio

import "golang.org/x/sys/unix"

const oDirect = unix.O_DIRECT

// StartWriteback starts the write-out of a file's dirty pages in
// [off, off+n) without waiting for it (sync_file_range); best effort, the
// final fsync writes whatever it did not start.
func StartWriteback(fd int, off, n int64) {
	_ = unix.SyncFileRange(fd, off, n, unix.SYNC_FILE_RANGE_WRITE)
}
