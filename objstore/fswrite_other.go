//go:build !linux

package objstore

// oDirect is 0 where O_DIRECT is not used: every write goes through the
// page cache.
const oDirect = 0
