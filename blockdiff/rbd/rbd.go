//go:build ceph

package rbd

import (
	"errors"
	"fmt"
	"io"
	"sort"
	"sync"
	"sync/atomic"

	librados "github.com/ceph/go-ceph/rados"
	librbd "github.com/ceph/go-ceph/rbd"

	"github.com/cairn-backup/cairn/blockdiff"
	"github.com/cairn-backup/cairn/internal/ceph"
)

// ConnConfig says how to reach the cluster: the ceph.conf path, the client ID,
// a keyring path and the connect and operation timeout (0: DefaultTimeout).
// The zero value follows the standard Ceph environment (CEPH_CONF, CEPH_ARGS).
// objstore/rados connects the same way.
type ConnConfig = ceph.ConnConfig

// DefaultTimeout is the connect and operation timeout of a ConnConfig whose
// Timeout is zero.
const DefaultTimeout = ceph.DefaultTimeout

// Conn is a connection to a Ceph cluster for RBD sources and restores. It is
// safe for concurrent use.
type Conn struct {
	conn *librados.Conn
}

// Connect connects to the cluster that cfg names.
func Connect(cfg ConnConfig) (*Conn, error) {
	conn, err := ceph.Connect(cfg)
	if err != nil {
		return nil, fmt.Errorf("rbd: %w", err)
	}
	return &Conn{conn: conn}, nil
}

// Close ends the connection. Sources opened on it must be closed first.
func (c *Conn) Close() { c.conn.Shutdown() }

// ioctx opens the pool (and namespace) of u.
func (c *Conn) ioctx(u URL) (*librados.IOContext, error) {
	ioctx, err := ceph.OpenPool(c.conn, u.Pool)
	if err != nil {
		return nil, fmt.Errorf("rbd: %w", err)
	}
	if u.Namespace != "" {
		ioctx.SetNamespace(u.Namespace)
	}
	return ioctx, nil
}

// openErr explains a failure to open an image or snapshot: which of the two
// is missing.
func openErr(ioctx *librados.IOContext, u URL, err error) error {
	if !errors.Is(err, librbd.ErrNotFound) && !errors.Is(err, librbd.ErrNotExist) {
		return fmt.Errorf("rbd: opening %s: %w", u, err)
	}
	if u.Snapshot != "" {
		if img, ierr := librbd.OpenImageReadOnly(ioctx, u.Image, librbd.NoSnapshot); ierr == nil {
			img.Close()
			return fmt.Errorf("rbd: image %s has no snapshot %q: %w", u.Spec(), u.Snapshot, err)
		}
	}
	return fmt.Errorf("rbd: image %s does not exist: %w", u.Spec(), err)
}

// Source reads an RBD snapshot for blockdiff.Backup. ReadAt is safe for
// concurrent use and splits large reads into parallel librbd reads. It
// implements blockdiff.DataFinder with the image's allocation map (diff
// against nothing), so that unallocated ranges are never read.
type Source struct {
	url   URL
	ioctx *librados.IOContext
	img   *librbd.Image
	size  int64
	read  atomic.Int64

	allocOnce sync.Once
	alloc     []blockdiff.Extent // allocated extents, sorted, merged
	allocErr  error
}

// onRead, when set (by tests), is called after every successful ReadAt.
var onRead func(u URL, off, n int64)

// ReadParallel is how many librbd reads one ReadAt of at least
// 2*ReadSplit bytes issues at once.
const ReadParallel = 4

// ReadSplit is the smallest piece a ReadAt is split into.
const ReadSplit = 1 << 20

// OpenSnapshot opens the snapshot u names (u.Snapshot must be set) for
// reading.
func (c *Conn) OpenSnapshot(u URL) (*Source, error) {
	if u.Snapshot == "" {
		return nil, fmt.Errorf("rbd: %s names no snapshot", u)
	}
	ioctx, err := c.ioctx(u)
	if err != nil {
		return nil, err
	}
	img, err := librbd.OpenImageReadOnly(ioctx, u.Image, u.Snapshot)
	if err != nil {
		err = openErr(ioctx, u, err)
		ioctx.Destroy()
		return nil, err
	}
	size, err := img.GetSize()
	if err != nil {
		img.Close()
		ioctx.Destroy()
		return nil, fmt.Errorf("rbd: size of %s: %w", u, err)
	}
	return &Source{url: u, ioctx: ioctx, img: img, size: int64(size)}, nil
}

// URL returns the snapshot's URL.
func (s *Source) URL() URL { return s.url }

// Size returns the snapshot's size in bytes.
func (s *Source) Size() int64 { return s.size }

// BytesRead returns how many bytes ReadAt has read from the cluster.
func (s *Source) BytesRead() int64 { return s.read.Load() }

// Close closes the snapshot.
func (s *Source) Close() error {
	err := s.img.Close()
	s.ioctx.Destroy()
	if err != nil {
		return fmt.Errorf("rbd: closing %s: %w", s.url, err)
	}
	return nil
}

// ReadAt reads len(p) bytes at off; reads of at least 2*ReadSplit bytes are
// split into up to ReadParallel concurrent librbd reads.
func (s *Source) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("rbd: read %s at negative offset %d", s.url, off)
	}
	if off >= s.size {
		return 0, io.EOF
	}
	want := len(p)
	if int64(want) > s.size-off {
		p = p[:s.size-off]
	}
	pieces := min(ReadParallel, len(p)/ReadSplit)
	var err error
	if pieces <= 1 {
		err = s.readFull(p, off)
	} else {
		step := (len(p) + pieces - 1) / pieces
		errs := make([]error, pieces)
		var wg sync.WaitGroup
		for i := range pieces {
			lo, hi := i*step, min(len(p), (i+1)*step)
			wg.Go(func() { errs[i] = s.readFull(p[lo:hi], off+int64(lo)) })
		}
		wg.Wait()
		err = errors.Join(errs...)
	}
	if err != nil {
		return 0, err
	}
	s.read.Add(int64(len(p)))
	if onRead != nil {
		onRead(s.url, off, int64(len(p)))
	}
	if len(p) < want {
		return len(p), io.EOF
	}
	return len(p), nil
}

// readFull reads exactly len(p) bytes at off, all inside the image.
func (s *Source) readFull(p []byte, off int64) error {
	for len(p) > 0 {
		n, err := s.img.ReadAt(p, off)
		if n == 0 && err == nil {
			err = io.ErrUnexpectedEOF
		}
		if err != nil && !(err == io.EOF && n == len(p)) {
			return fmt.Errorf("rbd: read %s at %d: %w", s.url, off, err)
		}
		p, off = p[n:], off+int64(n)
	}
	return nil
}

// diff runs diff-iterate over the whole snapshot against from ("" for the
// image's creation) with whole-object granularity.
func (s *Source) diff(from string) ([]blockdiff.Extent, error) {
	out := []blockdiff.Extent{}
	if s.size == 0 {
		return out, nil
	}
	err := s.img.DiffIterate(librbd.DiffIterateConfig{
		SnapName: from, Offset: 0, Length: uint64(s.size),
		IncludeParent: librbd.IncludeParent, WholeObject: librbd.EnableWholeObject,
		Callback: func(off, n uint64, exists int, _ interface{}) int {
			out = append(out, blockdiff.Extent{Offset: int64(off), Length: int64(n), Exists: exists != 0})
			return 0
		},
	})
	if err != nil {
		return nil, err
	}
	sort.Slice(out, func(a, b int) bool { return out[a].Offset < out[b].Offset })
	return out, nil
}

// Changes returns the extents that differ between snapshot from (of the same
// image) and this snapshot, as blockdiff hints. They are coarse (whole RADOS
// objects, and a range zeroed since is reported as data): Backup reads every
// reported extent and its zero detection makes zero blocks sparse. The slice
// is never nil.
func (s *Source) Changes(from string) ([]blockdiff.Extent, error) {
	if from == "" {
		return nil, fmt.Errorf("rbd: changes of %s: no base snapshot", s.url)
	}
	ext, err := s.diff(from)
	if err != nil {
		if errors.Is(err, librbd.ErrNotFound) || errors.Is(err, librbd.ErrNotExist) {
			return nil, fmt.Errorf("rbd: changes of %s since %q: base snapshot missing: %w", s.url, from, err)
		}
		return nil, fmt.Errorf("rbd: changes of %s since %q: %w", s.url, from, err)
	}
	return ext, nil
}

// NextData implements blockdiff.DataFinder from the snapshot's allocation
// map, computed once (with the object map this is cheap; without it librbd
// asks every object).
func (s *Source) NextData(off int64) (int64, int64, error) {
	s.allocOnce.Do(func() {
		ext, err := s.diff("")
		if err != nil {
			s.allocErr = fmt.Errorf("rbd: allocation map of %s: %w", s.url, err)
			return
		}
		for _, e := range ext {
			if !e.Exists || e.Length == 0 {
				continue
			}
			if n := len(s.alloc); n > 0 && s.alloc[n-1].Offset+s.alloc[n-1].Length >= e.Offset {
				last := &s.alloc[n-1]
				last.Length = max(last.Length, e.Offset+e.Length-last.Offset)
				continue
			}
			s.alloc = append(s.alloc, e)
		}
	})
	if s.allocErr != nil {
		return 0, 0, s.allocErr
	}
	i := sort.Search(len(s.alloc), func(i int) bool { return s.alloc[i].Offset+s.alloc[i].Length > off })
	if i == len(s.alloc) || off >= s.size {
		return s.size, s.size, nil
	}
	e := s.alloc[i]
	return max(off, e.Offset), min(s.size, e.Offset+e.Length), nil
}

var (
	_ blockdiff.Source     = (*Source)(nil)
	_ blockdiff.DataFinder = (*Source)(nil)
)
