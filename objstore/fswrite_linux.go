package objstore

import "golang.org/x/sys/unix"

// oDirect is O_DIRECT: the file backend writes whole chunks with it.
const oDirect = unix.O_DIRECT
