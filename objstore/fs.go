package objstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"iter"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
)

// The backend is documented in the package documentation, section "File backend".

func init() { Register("file", openFS) }

const fsTmpPrefix = ".cairn-tmp-"

// fsMaxSegment is the longest file name (NAME_MAX) that common Linux file
// systems accept.
const fsMaxSegment = 255

// fsStore is the file backend behind Guard, which checks the store, the
// context and the key (validateFSKey) before each call.
type fsStore struct {
	root string
}

func openFS(_ context.Context, u *url.URL) (Store, error) {
	if u.User != nil || (u.Host != "" && u.Host != "localhost") || u.RawQuery != "" || u.Opaque != "" {
		return nil, fmt.Errorf("objstore fs: URL %q: want file:///absolute/path with no host, user or query", u.Redacted())
	}
	if u.Path == "" || !filepath.IsAbs(u.Path) {
		return nil, fmt.Errorf("objstore fs: URL %q: the path must be absolute (file:///path)", u.Redacted())
	}
	root := filepath.Clean(u.Path)
	if err := os.MkdirAll(root, 0o700); err != nil {
		return nil, fmt.Errorf("objstore fs: creating the root: %w", err)
	}
	fi, err := os.Stat(root)
	if err != nil {
		return nil, fmt.Errorf("objstore fs: %w", err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("objstore fs: root %s is not a directory", root)
	}
	return Guard("fs", &fsStore{root: root}, validateFSKey), nil
}

// validateFSKey adds the fs backend's own rules to ValidateKey.
func validateFSKey(key string) error {
	if err := ValidateKey(key); err != nil {
		return err
	}
	for seg := range strings.SplitSeq(key, "/") {
		if len(seg) > fsMaxSegment {
			return fmt.Errorf("%w %q: segment longer than %d bytes (a file name limit of the fs backend)", ErrInvalidKey, key, fsMaxSegment)
		}
		if strings.HasPrefix(seg, fsTmpPrefix) {
			return fmt.Errorf("%w %q: segments starting with %q are reserved for temporary files of the fs backend", ErrInvalidKey, key, fsTmpPrefix)
		}
	}
	return nil
}

func (s *fsStore) err(op, key string, err error) error { return &OpError{"fs", op, key, err} }

// path returns the file of a key that Guard has validated.
func (s *fsStore) path(key string) string {
	return filepath.Join(s.root, filepath.FromSlash(key))
}

// rel names a path under the root by its key, for error messages.
func (s *fsStore) rel(p string) string {
	r, err := filepath.Rel(s.root, p)
	if err != nil {
		return p
	}
	return filepath.ToSlash(r)
}

// mkdirs creates dir and its missing parents under the root, fsyncing the
// parent of each folder it creates.
func (s *fsStore) mkdirs(dir string) error {
	fi, err := os.Stat(dir)
	if err == nil {
		if !fi.IsDir() {
			return fmt.Errorf("%q is an object, so it cannot also be a folder of keys", s.rel(dir))
		}
		return nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		if errors.Is(err, syscall.ENOTDIR) {
			return s.mkdirs(filepath.Dir(dir)) // reports which parent is a file
		}
		return err
	}
	if dir == s.root {
		return fmt.Errorf("the root %s has disappeared", s.root)
	}
	parent := filepath.Dir(dir)
	if err := s.mkdirs(parent); err != nil {
		return err
	}
	if err := os.Mkdir(dir, 0o700); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return s.mkdirs(dir) // created concurrently, or a file
		}
		return err
	}
	return syncDir(parent)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("fsync of folder %s: %w", dir, err)
	}
	return nil
}

// tempFile creates a temporary file in dir, creating dir first. A concurrent
// Delete may remove a folder it has just emptied between the two steps, so
// this retries.
func (s *fsStore) tempFile(dir string) (*os.File, error) {
	for attempt := 0; ; attempt++ {
		err := s.mkdirs(dir)
		if err == nil {
			var f *os.File
			if f, err = os.CreateTemp(dir, fsTmpPrefix+"*"); err == nil {
				return f, nil
			}
		}
		if !errors.Is(err, fs.ErrNotExist) || attempt >= 100 {
			return nil, err
		}
	}
}

func (s *fsStore) write(ctx context.Context, op, key string, r io.Reader, size int64, excl bool) (err error) {
	p := s.path(key)
	if fi, err := os.Lstat(p); err == nil && fi.IsDir() {
		return s.err(op, key, fmt.Errorf("%q is a folder of other keys, so it cannot also be an object", key))
	} else if err == nil && excl {
		return s.err(op, key, ErrExist)
	}
	dir := filepath.Dir(p)
	f, err := s.tempFile(dir)
	if err != nil {
		return s.err(op, key, err)
	}
	tmp := f.Name()
	defer func() {
		if f != nil {
			f.Close()
		}
		if err != nil || excl {
			os.Remove(tmp)
		}
	}()
	if size >= 0 {
		n, err := copyToFile(f, io.LimitReader(r, size))
		if err != nil {
			return s.err(op, key, fmt.Errorf("writing %s: %w", tmp, err))
		}
		if n < size {
			return s.err(op, key, errSizeMismatch(size, n, false))
		}
		if err := ExpectEOF(r, size); err != nil {
			return s.err(op, key, err)
		}
	} else if _, err := copyToFile(f, r); err != nil {
		return s.err(op, key, fmt.Errorf("writing %s: %w", tmp, err))
	}
	if err := f.Sync(); err != nil {
		return s.err(op, key, fmt.Errorf("fsync of %s: %w", tmp, err))
	}
	err = f.Close()
	f = nil
	if err != nil {
		return s.err(op, key, err)
	}
	if err := ctx.Err(); err != nil {
		return s.err(op, key, err)
	}
	if excl {
		if err := os.Link(tmp, p); err != nil {
			switch {
			case errors.Is(err, fs.ErrExist):
				return s.err(op, key, ErrExist)
			case errors.Is(err, syscall.EPERM), errors.Is(err, syscall.ENOTSUP), errors.Is(err, syscall.ENOSYS):
				return s.err(op, key, fmt.Errorf("%w: the file system cannot hard-link: %w", ErrNotSupported, err))
			}
			return s.err(op, key, err)
		}
	} else if err := os.Rename(tmp, p); err != nil {
		if fi, serr := os.Lstat(p); serr == nil && fi.IsDir() {
			return s.err(op, key, fmt.Errorf("%q is a folder of other keys, so it cannot also be an object", key))
		}
		return s.err(op, key, err)
	}
	if err := syncDir(dir); err != nil {
		return s.err(op, key, err)
	}
	return nil
}

func (s *fsStore) Put(ctx context.Context, key string, r io.Reader, size int64) error {
	return s.write(ctx, "put", key, r, size, false)
}

func (s *fsStore) Create(ctx context.Context, key string, r io.Reader, size int64) error {
	return s.write(ctx, "create", key, r, size, true)
}

// notExist reports whether err means that no object is at the path: it is
// missing, or a parent is a file.
func notExist(err error) bool {
	return errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR)
}

type fsReader struct {
	io.Reader
	f *os.File
}

func (r fsReader) Close() error { return r.f.Close() }

func (s *fsStore) Get(ctx context.Context, key string, offset, length int64) (io.ReadCloser, error) {
	f, err := os.Open(s.path(key))
	if notExist(err) {
		return nil, s.err("get", key, ErrNotExist)
	}
	if err != nil {
		return nil, s.err("get", key, err)
	}
	fi, err := f.Stat()
	if err != nil || fi.IsDir() {
		f.Close()
		if err == nil {
			err = ErrNotExist // a folder of other keys
		}
		return nil, s.err("get", key, err)
	}
	if offset > 0 {
		if _, err := f.Seek(offset, io.SeekStart); err != nil {
			f.Close()
			return nil, s.err("get", key, err)
		}
	}
	var r io.Reader = ctxReader{ctx, f}
	if length >= 0 {
		r = io.LimitReader(r, length)
	}
	return fsReader{r, f}, nil
}

func (s *fsStore) Stat(_ context.Context, key string) (ObjectInfo, error) {
	fi, err := os.Stat(s.path(key))
	if notExist(err) || (err == nil && !fi.Mode().IsRegular()) {
		return ObjectInfo{}, s.err("stat", key, ErrNotExist)
	}
	if err != nil {
		return ObjectInfo{}, s.err("stat", key, err)
	}
	return ObjectInfo{Key: key, Size: fi.Size(), ModTime: fi.ModTime()}, nil
}

func (s *fsStore) Delete(_ context.Context, key string) error {
	p := s.path(key)
	// unlink, not os.Remove: a folder of other keys is no object to delete.
	if err := syscall.Unlink(p); err != nil {
		if notExist(err) || errors.Is(err, syscall.EISDIR) {
			return nil
		}
		return s.err("delete", key, &fs.PathError{Op: "unlink", Path: p, Err: err})
	}
	// Remove the folders this left empty; stop at the first that is not.
	for d := filepath.Dir(p); d != s.root && strings.HasPrefix(d, s.root); d = filepath.Dir(d) {
		if syscall.Rmdir(d) != nil {
			break
		}
	}
	return nil
}

func (s *fsStore) List(ctx context.Context, prefix string) iter.Seq2[ObjectInfo, error] {
	return func(yield func(ObjectInfo, error) bool) {
		dir, name := "", prefix
		if i := strings.LastIndexByte(prefix, '/'); i >= 0 {
			dir, name = prefix[:i], prefix[i+1:]
			if validateFSKey(dir) != nil {
				return // no valid key starts with this prefix
			}
		}
		s.walk(ctx, prefix, dir, name, yield)
	}
}

// walk yields the objects in the folder of key dir ("" for the root) whose
// names start with name, and the objects in its matching subfolders, in key
// order. It reports whether to go on.
func (s *fsStore) walk(ctx context.Context, prefix, dir, name string, yield func(ObjectInfo, error) bool) bool {
	path := filepath.Join(s.root, filepath.FromSlash(dir))
	f, err := os.Open(path)
	if notExist(err) {
		return true // no such folder, or removed while listing
	}
	if err != nil {
		return yield(ObjectInfo{}, s.err("list", prefix, err))
	}
	// Only the names are kept while the folder is listed (a data folder of
	// a large repository holds 100k objects): read in batches, each entry
	// becomes its sort key, the name with "/" for a folder, since a folder
	// "a" holds keys "a/...", which sort after "a-c" and "a.b" because '/'
	// is greater than '-' and '.'.
	var names []string
	for {
		batch, err := f.ReadDir(1024)
		for _, e := range batch {
			n := e.Name()
			if !strings.HasPrefix(n, name) || strings.HasPrefix(n, fsTmpPrefix) {
				continue
			}
			if e.IsDir() {
				n += "/"
			}
			names = append(names, n)
		}
		if err == io.EOF || err == nil && len(batch) == 0 {
			break
		}
		if err != nil && !notExist(err) {
			f.Close()
			return yield(ObjectInfo{}, s.err("list", prefix, err))
		}
		if err != nil {
			break
		}
	}
	f.Close()
	slices.Sort(names)
	for i, sk := range names {
		names[i] = "" // the listed names go as they are yielded
		if err := ctx.Err(); err != nil {
			return yield(ObjectInfo{}, s.err("list", prefix, err))
		}
		base, isDir := strings.CutSuffix(sk, "/")
		key := base
		if dir != "" {
			key = dir + "/" + base
		}
		if isDir {
			if !s.walk(ctx, prefix, key, "", yield) {
				return false
			}
			continue
		}
		fi, err := os.Lstat(filepath.Join(path, base))
		if err == nil && fi.Mode()&fs.ModeSymlink != 0 {
			fi, err = os.Stat(filepath.Join(path, base))
		}
		if notExist(err) {
			continue // deleted while listing
		}
		if err != nil {
			return yield(ObjectInfo{}, s.err("list", prefix, err))
		}
		if !fi.Mode().IsRegular() {
			continue
		}
		if !yield(ObjectInfo{Key: key, Size: fi.Size(), ModTime: fi.ModTime()}, nil) {
			return false
		}
	}
	return true
}

// Close does nothing: Guard marks the store closed.
func (s *fsStore) Close() error { return nil }
