// Package objstore is the storage layer under every cairn repository: one small
// Store interface over flat key/value objects, opened from a URL.
//
// Backends register a URL scheme with Register. The file (file://) and memory
// (mem://) backends live in this package; s3:// is in objstore/s3 and rados:// in
// objstore/rados (build tag ceph). Import a backend package for its side effect
// to make its scheme available to Open, as with database/sql drivers.
//
// Keys are slash-separated strings chosen by the caller; a backend stores them
// as they are and hides no fan-out of its own. Every backend enforces the rules
// of ValidateKey (no empty, "." or ".." segments, no leading or trailing
// slash, no control characters), so a repository can move between backends.
// Each sits behind Guard, which makes these checks, refuses operations on a
// closed store or with a done context, and wraps every error in an OpError,
// the same way for all; a backend of your own can use it too.
//
// # File backend
//
// The file backend (file://) stores each object as a file under a root directory.
//
// URL: file:///absolute/path (file://localhost/path is accepted too). The root
// is created (mode 0700) when missing. A key maps to the path root/KEY, so the
// key data/ab/cd is the file data/ab/cd; folders are created as needed (mode
// 0700, files 0600) and removed again by Delete when it leaves them empty.
// Because a name cannot be both a file and a folder, it cannot hold
// both "a" and "a/b"; such a Put fails with an error naming the conflict. Key
// segments are limited to 255 bytes and may not start with ".cairn-tmp-",
// which names temporary files.
//
// Put writes a temporary file in the object's folder, fsyncs it, renames it
// over the key and fsyncs the folder, so readers see the old object or the new
// one, and a crash leaves at most a temporary file (ignored by List; delete
// leftovers older than a day by hand if you care). Create links the temporary
// file to the key, which fails when the key exists, so of concurrent Creates
// exactly one wins; on file systems without hard links, Create returns
// ErrNotSupported. On Linux the whole MiB chunks of an object are written
// with O_DIRECT (objects are read back rarely: the page cache would only
// cost CPU and evict other pages), the rest through the page cache; the
// fsync covers both. List walks folders in key order, holding one folder's
// names in memory at a time, so it scales to millions of keys as long as the
// caller's keys fan out into folders.
//
// # Memory backend
//
// The memory backend (mem://) keeps objects in process memory, for tests of the layers
// above objstore.
//
// URL: mem://NAME. Every Open of the same NAME in one process returns a handle
// on the same objects, so a test can open a repository twice (a writer and a
// reader, or again after Close) and see one store; the objects live until the
// process exits, so tests should pick unique names (t.Name() is a good one).
// Close ends only the handle, not the data. mem:// without a name opens a new
// private store each time. Create is atomic: of concurrent Creates exactly one
// wins. Objects are copied on Put, so callers may reuse their buffers.
package objstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"iter"
	"net/url"
	"sort"
	"sync"
	"time"
)

// ErrNotExist is returned (wrapped) when an object does not exist.
var ErrNotExist = errors.New("object does not exist")

// ErrExist is returned (wrapped) by Create when the key already holds an object.
var ErrExist = errors.New("object already exists")

// ErrNotSupported is returned (wrapped) by Create on a backend that cannot create
// conditionally. Callers that need mutual exclusion must then use a protocol that
// works with plain Put and List (see blockdiff's locking).
var ErrNotSupported = errors.New("operation not supported by this backend")

// ObjectInfo describes a stored object.
type ObjectInfo struct {
	Key     string    // full key, without the store's own prefix
	Size    int64     // length in bytes
	ModTime time.Time // time of the last write, as the backend reports it
}

// Store is a flat namespace of immutable-once-written objects.
//
// All methods are safe for concurrent use. Errors wrap ErrNotExist, ErrExist or
// ErrNotSupported where those apply, and otherwise name the operation and key.
type Store interface {
	// Put stores the bytes of r under key, replacing any existing object.
	// size is the exact length of r, or -1 when unknown. The write is atomic:
	// a concurrent Get sees the old object or the new one, never a part.
	Put(ctx context.Context, key string, r io.Reader, size int64) error

	// Create is Put that fails with ErrExist when key already exists; of
	// concurrent Creates of one key exactly one succeeds. Backends that cannot
	// guarantee this return ErrNotSupported and store nothing.
	Create(ctx context.Context, key string, r io.Reader, size int64) error

	// Get returns length bytes of the object starting at offset; length < 0
	// reads to the end. A range past the end is shortened, not an error.
	Get(ctx context.Context, key string, offset, length int64) (io.ReadCloser, error)

	// Stat returns the object's size and modification time.
	Stat(ctx context.Context, key string) (ObjectInfo, error)

	// Delete removes key. Deleting a missing key is not an error.
	Delete(ctx context.Context, key string) error

	// List yields every object whose key starts with prefix, in ascending key
	// order. Iteration stops at the first error, which is yielded.
	List(ctx context.Context, prefix string) iter.Seq2[ObjectInfo, error]

	// Close releases the store's resources.
	Close() error
}

// Opener opens a Store for a parsed URL of the scheme it was registered for.
type Opener func(ctx context.Context, u *url.URL) (Store, error)

var (
	registryMu sync.RWMutex
	registry   = map[string]Opener{}
)

// Register makes a backend available to Open under scheme. It panics when the
// scheme is registered twice, as that is a programming error found at init.
func Register(scheme string, open Opener) {
	registryMu.Lock()
	defer registryMu.Unlock()
	if _, dup := registry[scheme]; dup {
		panic("objstore: scheme registered twice: " + scheme)
	}
	registry[scheme] = open
}

// Schemes returns the registered URL schemes in sorted order.
func Schemes() []string {
	registryMu.RLock()
	defer registryMu.RUnlock()
	s := make([]string, 0, len(registry))
	for k := range registry {
		s = append(s, k)
	}
	sort.Strings(s)
	return s
}

// notBuilt says why a scheme of cairn's own backends is not registered, for
// the schemes that need a build tag.
var notBuilt = map[string]string{
	"rados": "built without Ceph support: rebuild with -tags 'ceph pacific'",
}

// Bucketer is implemented by stores that live in a bucket (S3): init checks
// the bucket before it writes the repository.
type Bucketer interface {
	// EnsureBucket returns nil when the bucket exists; otherwise, with
	// create, it creates it, and without, it returns an error naming the
	// bucket.
	EnsureBucket(ctx context.Context, create bool) error
}

// Open opens the store that rawURL names, such as file:///var/backups/repo or
// s3://bucket/prefix?endpoint=http://127.0.0.1:7480&path_style=true.
func Open(ctx context.Context, rawURL string) (Store, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("objstore: bad URL: %w", err)
	}
	if u.Scheme == "" {
		return nil, fmt.Errorf("objstore: URL %q has no scheme (want one of %v)", rawURL, Schemes())
	}
	registryMu.RLock()
	open, ok := registry[u.Scheme]
	registryMu.RUnlock()
	if !ok && notBuilt[u.Scheme] != "" {
		return nil, fmt.Errorf("objstore: %s:// repositories: %s", u.Scheme, notBuilt[u.Scheme])
	}
	if !ok {
		return nil, fmt.Errorf("objstore: unknown scheme %q (registered: %v; import the backend package, e.g. objstore/s3)", u.Scheme, Schemes())
	}
	return open(ctx, u)
}

// ExpectEOF checks that r holds no byte beyond the size a Put announced; a
// backend calls it after reading size bytes, so a caller's wrong size is an
// error instead of a silently truncated object.
func ExpectEOF(r io.Reader, size int64) error {
	var one [1]byte
	for {
		n, err := r.Read(one[:])
		if n > 0 {
			return fmt.Errorf("reader holds more than the announced size %d", size)
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("reading the object: %w", err)
		}
	}
}
