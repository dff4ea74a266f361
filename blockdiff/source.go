package blockdiff

import (
	"errors"
	"fmt"
	"io"
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

// OpenFileSource opens a file or block device; name may be a path or a
// file:// URL.
func OpenFileSource(name string) (*FileSource, error) {
	path := strings.TrimPrefix(name, "file://")
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("blockdiff: open source: %w", err)
	}
	size, err := f.Seek(0, io.SeekEnd) // works for block devices, unlike Stat
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("blockdiff: size of %s: %w", path, err)
	}
	s := &FileSource{f: f, size: size}
	st, err := f.Stat()
	if err == nil && st.Mode().IsRegular() {
		_, err := unix.Seek(int(f.Fd()), 0, unix.SEEK_DATA)
		s.seek = err == nil || errors.Is(err, unix.ENXIO)
	}
	return s, nil
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
