package blockdiff

import (
	"bytes"
	"context"
	"errors"
	"io"
	"iter"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/objstore"
)

// clockStore stamps every object written through it with a fake clock that
// the test advances, instead of the backend's: the injected clock of the
// lock and grace tests. Objects written before it wrapped the store keep
// the backend's times.
type clockStore struct {
	objstore.Store
	mu    sync.Mutex
	now   time.Time
	mtime map[string]time.Time
}

func newClockStore(s objstore.Store) *clockStore {
	return &clockStore{Store: s, now: time.Now().Truncate(time.Second), mtime: map[string]time.Time{}}
}

func (c *clockStore) advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

func (c *clockStore) stamp(key string) {
	c.mu.Lock()
	c.mtime[key] = c.now
	c.mu.Unlock()
}

func (c *clockStore) fix(info objstore.ObjectInfo) objstore.ObjectInfo {
	c.mu.Lock()
	defer c.mu.Unlock()
	if t, ok := c.mtime[info.Key]; ok {
		info.ModTime = t
	}
	return info
}

func (c *clockStore) Put(ctx context.Context, key string, r io.Reader, size int64) error {
	err := c.Store.Put(ctx, key, r, size)
	if err == nil {
		c.stamp(key)
	}
	return err
}

func (c *clockStore) Create(ctx context.Context, key string, r io.Reader, size int64) error {
	err := c.Store.Create(ctx, key, r, size)
	if err == nil {
		c.stamp(key)
	}
	return err
}

func (c *clockStore) Stat(ctx context.Context, key string) (objstore.ObjectInfo, error) {
	info, err := c.Store.Stat(ctx, key)
	return c.fix(info), err
}

func (c *clockStore) List(ctx context.Context, prefix string) iter.Seq2[objstore.ObjectInfo, error] {
	return func(yield func(objstore.ObjectInfo, error) bool) {
		for info, err := range c.Store.List(ctx, prefix) {
			if !yield(c.fix(info), err) {
				return
			}
		}
	}
}

// killStore stands for a process that can be killed: after kill, none of
// its writes or deletes land, as if it had died at that moment.
type killStore struct {
	objstore.Store
	killed atomic.Bool
}

var errKilled = errors.New("process killed")

func (k *killStore) Put(ctx context.Context, key string, r io.Reader, size int64) error {
	if k.killed.Load() {
		return errKilled
	}
	return k.Store.Put(ctx, key, r, size)
}

func (k *killStore) Create(ctx context.Context, key string, r io.Reader, size int64) error {
	if k.killed.Load() {
		return errKilled
	}
	return k.Store.Create(ctx, key, r, size)
}

func (k *killStore) Delete(ctx context.Context, key string) error {
	if k.killed.Load() {
		return errKilled
	}
	return k.Store.Delete(ctx, key)
}

func (k *killStore) Stat(ctx context.Context, key string) (objstore.ObjectInfo, error) {
	if k.killed.Load() {
		return objstore.ObjectInfo{}, errKilled
	}
	return k.Store.Stat(ctx, key)
}

// openRepo opens another handle on a repository, as another process would.
func openRepo(t testing.TB, s objstore.Store, opts Options) *Repository {
	t.Helper()
	r, err := Open(context.Background(), s, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// blocksImage concatenates blocks of the pool.
func blocksImage(pool [][]byte, idx ...int) []byte {
	var b bytes.Buffer
	for _, i := range idx {
		b.Write(pool[i])
	}
	return b.Bytes()
}

// blockPool returns n distinct random blocks of the test block size.
func blockPool(seed uint64, n int) [][]byte {
	pool := make([][]byte, n)
	for i := range pool {
		pool[i] = randBytes(seed*1000+uint64(i), testBS)
	}
	return pool
}

// getObject reads a stored object.
func getObject(t testing.TB, s objstore.Store, key string) []byte {
	t.Helper()
	rc, err := s.Get(context.Background(), key, 0, -1)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// putObject overwrites a stored object.
func putObject(t testing.TB, s objstore.Store, key string, b []byte) {
	t.Helper()
	if err := s.Put(context.Background(), key, bytes.NewReader(b), int64(len(b))); err != nil {
		t.Fatal(err)
	}
}

// statuses returns the status of every version, by ID.
func statuses(t testing.TB, r *Repository) map[string]Status {
	t.Helper()
	vs, err := r.List(context.Background(), Filter{})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]Status{}
	for _, v := range vs {
		out[v.ID] = v.Status
	}
	return out
}
