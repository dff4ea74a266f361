package proc

import (
	"os"
	"syscall"
)

// setPipeSize grows a pipe's buffer (F_SETPIPE_SZ) so that a child and this
// process exchange fewer, larger reads and writes, and a fast child keeps
// writing while the reader is busy. Failure is harmless.
func setPipeSize(f *os.File, size int) {
	rc, err := f.SyscallConn()
	if err != nil {
		return
	}
	_ = rc.Control(func(fd uintptr) {
		_, _, _ = syscall.Syscall(syscall.SYS_FCNTL, fd, 1031 /* F_SETPIPE_SZ */, uintptr(size))
	})
}
