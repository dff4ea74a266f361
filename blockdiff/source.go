package blockdiff

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// Source is what Backup reads: a volume image of a known size. ReadAt must be
// safe for concurrent use (os.File's is).
type Source interface {
	io.ReaderAt
	// Size returns the image's length in bytes.
	Size() int64
}

// MaxVolumeSize is the largest source Backup accepts (8 PiB): a size beyond
// it is a source that does not know its size (a directory's seek reports
// 2^63-1), not a volume.
const MaxVolumeSize = 1 << 53

// DataFinder is implemented by sources that know where their holes are, so
// that Backup skips holes without reading them.
type DataFinder interface {
	// NextData returns the first extent [start, end) holding data at or after
	// off; start == end == Size() when only holes remain.
	NextData(off int64) (start, end int64, err error)
}

// readerAtSource adapts an io.ReaderAt with a size.
type readerAtSource struct {
	io.ReaderAt
	size int64
}

func (s readerAtSource) Size() int64 { return s.size }

// NewSource returns a Source over r, which holds size bytes.
func NewSource(r io.ReaderAt, size int64) Source { return readerAtSource{r, size} }

// FileSource is a regular file or a block device opened for backup. Holes are
// found with SEEK_DATA/SEEK_HOLE where the file system supports them.
type FileSource struct {
	f    *os.File
	size int64
	seek bool // SEEK_DATA works here
}

// ErrNotVolume is returned (wrapped) by OpenFileSource for a path that is
// neither a regular file nor a block device: a directory, a FIFO, a socket
// or a character device (/dev/zero, /dev/nvme0) is no volume to back up.
var ErrNotVolume = errors.New("blockdiff: not a volume (want a regular file or a block device)")

// OpenFileSource opens a regular file or a block device; name may be a path
// or a file:// URL. Anything else is refused with an error that names the
// path and its type (ErrNotVolume), before anything is read. The path is
// checked with stat first and opened non-blocking, so a FIFO can never hang
// the open.
func OpenFileSource(name string) (*FileSource, error) {
	path := strings.TrimPrefix(name, "file://")
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("blockdiff: open source: %w", err)
	}
	if err := checkVolumeMode(path, st.Mode()); err != nil {
		return nil, err
	}
	// O_NONBLOCK: should the path turn into a FIFO between stat and open,
	// the open still returns at once (and fstat below refuses it). For
	// regular files and block devices the flag changes nothing.
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_NONBLOCK|unix.O_NOCTTY, 0)
	if err != nil {
		return nil, fmt.Errorf("blockdiff: open source: %w", err)
	}
	if st, err = f.Stat(); err != nil {
		f.Close()
		return nil, fmt.Errorf("blockdiff: stat source %s: %w", path, err)
	}
	if err := checkVolumeMode(path, st.Mode()); err != nil {
		f.Close()
		return nil, err
	}
	size, err := f.Seek(0, io.SeekEnd) // works for block devices, unlike Stat
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("blockdiff: size of %s: %w", path, err)
	}
	if size < 0 || size > MaxVolumeSize {
		f.Close()
		return nil, fmt.Errorf("blockdiff: source %s reports %d bytes: want 0..%d", path, size, int64(MaxVolumeSize))
	}
	s := &FileSource{f: f, size: size}
	if st.Mode().IsRegular() {
		_, err := unix.Seek(int(f.Fd()), 0, unix.SEEK_DATA)
		s.seek = err == nil || errors.Is(err, unix.ENXIO)
	}
	return s, nil
}

// checkVolumeMode refuses every file type but regular files and block
// devices.
func checkVolumeMode(path string, m fs.FileMode) error {
	if m.IsRegular() || (m&fs.ModeDevice != 0 && m&fs.ModeCharDevice == 0) {
		return nil
	}
	return fmt.Errorf("blockdiff: source %s is a %s: %w", path, fileType(m), ErrNotVolume)
}

// fileType names the type of a file mode for people.
func fileType(m fs.FileMode) string {
	switch {
	case m.IsDir():
		return "directory"
	case m&fs.ModeNamedPipe != 0:
		return "FIFO (named pipe)"
	case m&fs.ModeSocket != 0:
		return "socket"
	case m&fs.ModeCharDevice != 0:
		return "character device"
	case m&fs.ModeSymlink != 0:
		return "symbolic link"
	case m&fs.ModeIrregular != 0:
		return "file of unknown type"
	}
	return "file of type " + m.Type().String()
}

// ReadAt reads from the file at off.
func (s *FileSource) ReadAt(p []byte, off int64) (int, error) { return s.f.ReadAt(p, off) }

// Size returns the file's or device's length.
func (s *FileSource) Size() int64 { return s.size }

// Close closes the file.
func (s *FileSource) Close() error { return s.f.Close() }

// NextData implements DataFinder with lseek(SEEK_DATA) and lseek(SEEK_HOLE);
// where they are unsupported the whole file counts as data.
func (s *FileSource) NextData(off int64) (int64, int64, error) {
	if off >= s.size {
		return s.size, s.size, nil
	}
	if !s.seek {
		return off, s.size, nil
	}
	fd := int(s.f.Fd())
	start, err := unix.Seek(fd, off, unix.SEEK_DATA)
	if errors.Is(err, unix.ENXIO) {
		return s.size, s.size, nil
	}
	if err != nil {
		return 0, 0, fmt.Errorf("blockdiff: SEEK_DATA at %d: %w", off, err)
	}
	end, err := unix.Seek(fd, start, unix.SEEK_HOLE)
	if err != nil {
		return 0, 0, fmt.Errorf("blockdiff: SEEK_HOLE at %d: %w", start, err)
	}
	return start, min(end, s.size), nil
}

// holeMap answers "does [off,end) hold data?" for increasing offsets with a
// cached data extent, so a mostly-data file costs few lseek calls.
type holeMap struct {
	f          DataFinder
	start, end int64 // the data extent found by the last query
	valid      bool
}

// hasData reports whether [off,end) may contain data. Queries must come in
// increasing order of off.
func (h *holeMap) hasData(off, end int64) (bool, error) {
	if h.f == nil {
		return true, nil
	}
	if !h.valid || off >= h.end {
		s, e, err := h.f.NextData(off)
		if err != nil {
			return false, err
		}
		h.start, h.end, h.valid = s, e, true
		if e <= s { // only holes remain
			h.end = s
			return false, nil
		}
	}
	return h.start < end && h.end > off, nil
}
