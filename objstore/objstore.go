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
	if !ok {
		return nil, fmt.Errorf("objstore: unknown scheme %q (registered: %v; import the backend package, e.g. objstore/s3)", u.Scheme, Schemes())
	}
	return open(ctx, u)
}
