package objstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"iter"
	"strings"
	"sync/atomic"
)

// errClosed is the cause of every operation on a closed store.
var errClosed = errors.New("store is closed")

// Guard returns s behind the checks that every backend of this module makes
// before it touches its storage, so that each backend implements only the
// storage itself and all of them fail alike:
//
//   - an operation on a store that Close closed fails with "store is closed";
//   - an operation whose context is already done fails with the context's
//     error, and the reader given to Put or Create fails its reads once the
//     context is done, so that a long upload stops promptly;
//   - a key that validate refuses fails with its error (validate should wrap
//     ErrInvalidKey; nil means ValidateKey, and a backend with stricter rules
//     passes a function that calls ValidateKey first);
//   - Get with a negative offset fails;
//   - List with a prefix that holds a control character yields nothing, as
//     no valid key starts with it;
//   - every error the backend returns that is not already an *OpError is
//     wrapped in one that names backend, the operation and the key.
//
// Close marks the store closed and closes s once; later calls return nil.
// The store Guard returns has the optional methods s has (EnsureBucket), and
// checks the store and the context before them too. Backends outside this
// module may use Guard as well.
func Guard(backend string, s Store, validate func(key string) error) Store {
	if validate == nil {
		validate = ValidateKey
	}
	g := &guarded{backend: backend, s: s, validate: validate}
	if b, ok := s.(bucketer); ok {
		return &guardedBucket{g, b}
	}
	return g
}

// bucketer is the method set of Bucketer, which Guard passes on.
type bucketer interface {
	EnsureBucket(ctx context.Context, create bool) error
}

// guardedBucket is a guarded store whose backend has buckets.
type guardedBucket struct {
	*guarded
	b bucketer
}

// EnsureBucket checks the store and the context, then calls the backend's.
func (g *guardedBucket) EnsureBucket(ctx context.Context, create bool) error {
	if err := g.check(ctx, "ensure-bucket", "", false); err != nil {
		return err
	}
	return g.b.EnsureBucket(ctx, create)
}

// guarded is the Store that Guard returns.
type guarded struct {
	backend  string
	s        Store
	validate func(string) error
	closed   atomic.Bool
}

// Unwrap returns the guarded backend, for tests that look inside it.
func (g *guarded) Unwrap() Store { return g.s }

func (g *guarded) err(op, key string, err error) error {
	if err == nil {
		return nil
	}
	if _, ok := err.(*OpError); ok {
		return err
	}
	return &OpError{Backend: g.backend, Op: op, Key: key, Err: err}
}

// check is the guard of an operation on one key (validate) or on a prefix.
func (g *guarded) check(ctx context.Context, op, key string, validate bool) error {
	if g.closed.Load() {
		return g.err(op, key, errClosed)
	}
	if err := ctx.Err(); err != nil {
		return g.err(op, key, err)
	}
	if validate {
		if err := g.validate(key); err != nil {
			return g.err(op, key, err)
		}
	}
	return nil
}

func (g *guarded) Put(ctx context.Context, key string, r io.Reader, size int64) error {
	if err := g.check(ctx, "put", key, true); err != nil {
		return err
	}
	return g.err("put", key, g.s.Put(ctx, key, ctxReader{ctx, r}, size))
}

func (g *guarded) Create(ctx context.Context, key string, r io.Reader, size int64) error {
	if err := g.check(ctx, "create", key, true); err != nil {
		return err
	}
	return g.err("create", key, g.s.Create(ctx, key, ctxReader{ctx, r}, size))
}

func (g *guarded) Get(ctx context.Context, key string, offset, length int64) (io.ReadCloser, error) {
	if err := g.check(ctx, "get", key, true); err != nil {
		return nil, err
	}
	if offset < 0 {
		return nil, g.err("get", key, fmt.Errorf("negative offset %d", offset))
	}
	rc, err := g.s.Get(ctx, key, offset, length)
	if err != nil {
		return nil, g.err("get", key, err)
	}
	return rc, nil
}

func (g *guarded) Stat(ctx context.Context, key string) (ObjectInfo, error) {
	if err := g.check(ctx, "stat", key, true); err != nil {
		return ObjectInfo{}, err
	}
	info, err := g.s.Stat(ctx, key)
	return info, g.err("stat", key, err)
}

func (g *guarded) Delete(ctx context.Context, key string) error {
	if err := g.check(ctx, "delete", key, true); err != nil {
		return err
	}
	return g.err("delete", key, g.s.Delete(ctx, key))
}

func (g *guarded) List(ctx context.Context, prefix string) iter.Seq2[ObjectInfo, error] {
	return func(yield func(ObjectInfo, error) bool) {
		if err := g.check(ctx, "list", prefix, false); err != nil {
			yield(ObjectInfo{}, err)
			return
		}
		if strings.ContainsFunc(prefix, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
			return // no valid key holds a control character
		}
		for info, err := range g.s.List(ctx, prefix) {
			if err != nil {
				yield(ObjectInfo{}, g.err("list", prefix, err))
				return
			}
			if !yield(info, nil) {
				return
			}
		}
	}
}

func (g *guarded) Close() error {
	if !g.closed.CompareAndSwap(false, true) {
		return nil
	}
	return g.s.Close()
}

// InMemory returns the *bytes.Reader behind r, a Put's or Create's reader
// (also behind Guard's context check), when it holds exactly size unread
// bytes, so that a backend can send them as they are, seeking back to retry,
// instead of copying them into a buffer of its own first; else nil.
func InMemory(r io.Reader, size int64) *bytes.Reader {
	if c, ok := r.(ctxReader); ok {
		r = c.r
	}
	br, ok := r.(*bytes.Reader)
	if !ok || size < 0 || int64(br.Len()) != size {
		return nil
	}
	return br
}

// ctxReader fails reads once its context is done, so that long copies stop
// promptly on cancellation.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
