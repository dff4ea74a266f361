//go:build !linux

package blockdiff

// oDirect is 0 where O_DIRECT is not used: restores write through the page
// cache.
const oDirect = 0

// startWriteback does nothing where sync_file_range does not exist: the
// final fsync writes everything.
func startWriteback(fd int, off, n int64) {}
