package blockdiff

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/cairn-backup/cairn/objstore"
)

// indexCache keeps the sealed bodies of index directories and frames of
// compacted generations on local disk (Options.CacheDir), so that a backup
// does not download them again. Bodies are kept as stored (encrypted in an
// encrypted repository) and opened, authenticated and checked on every read:
// a damaged or foreign file is dropped and fetched again, never trusted.
// Generations are never rewritten (a new compaction writes a new name), so an
// entry cannot go stale; the files of generations that left the index are
// removed (prune). Several processes may share the directory: files are
// written to a temporary name and renamed. A nil *indexCache caches nothing.
type indexCache struct {
	dir string // <CacheDir>/<repository ID>/index

	mu     sync.Mutex
	failed bool // a write failed: caching is off for this process
	log    func(msg string, args ...any)
}

// newIndexCache returns the cache of the repository id under root, or nil
// when root is empty.
func newIndexCache(root, id string, warn func(msg string, args ...any)) *indexCache {
	if root == "" || id == "" || len(id) > 64 || strings.Trim(id, "0123456789abcdef") != "" {
		return nil // an ID that is no hex name is no directory name either
	}
	return &indexCache{dir: filepath.Join(root, id, "index"), log: warn}
}

// path is the file of an index key ("index/c-<gen>" or a frame's
// "index/c-<gen>-<seq>#<n>").
func (c *indexCache) path(key string) string {
	name := strings.ReplaceAll(strings.TrimPrefix(key, "index/"), "#", ".")
	return filepath.Join(c.dir, name)
}

// read returns the cached body of key, or nil.
func (c *indexCache) read(key string) []byte {
	if c == nil {
		return nil
	}
	b, err := os.ReadFile(c.path(key))
	if err != nil {
		return nil
	}
	return b
}

// drop removes the cached body of key (it did not open).
func (c *indexCache) drop(key string) {
	if c != nil {
		_ = os.Remove(c.path(key))
	}
}

// write stores body as the cached body of key, best effort.
func (c *indexCache) write(key string, body []byte) {
	if c == nil {
		return
	}
	c.mu.Lock()
	failed := c.failed
	c.mu.Unlock()
	if failed {
		return
	}
	err := os.MkdirAll(c.dir, 0o700)
	var f *os.File
	if err == nil {
		f, err = os.CreateTemp(c.dir, ".tmp-*")
	}
	if err == nil {
		_, err = f.Write(body)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err == nil {
			err = os.Rename(f.Name(), c.path(key))
		}
		if err != nil {
			_ = os.Remove(f.Name())
		}
	}
	if err != nil {
		c.mu.Lock()
		c.failed = true
		c.mu.Unlock()
		if c.log != nil {
			c.log("index cache disabled for this process: cannot write to it", "dir", c.dir, "err", err)
		}
	}
}

// prune removes the cached files of generations not in live (names of
// generations) and temporary files that killed writers left (an hour old:
// younger ones may be another writer's, in this process or another).
func (c *indexCache) prune(live map[string]bool) {
	if c == nil {
		return
	}
	ents, err := os.ReadDir(c.dir)
	if err != nil {
		return
	}
	for _, e := range ents {
		name := e.Name()
		gen, ok := strings.CutPrefix(name, "c-")
		stale := ok && len(gen) >= 32 && !live[gen[:32]]
		if strings.HasPrefix(name, ".tmp-") {
			info, err := e.Info()
			stale = err == nil && time.Since(info.ModTime()) > time.Hour
		}
		if stale {
			_ = os.Remove(filepath.Join(c.dir, name))
		}
	}
}

// cachedGet returns decode of the body of key: the cached body when it
// decodes, else the body fetch returns (cached, then decoded). decode may
// overwrite the body it is given. Errors of decode on a fetched body are
// returned as they are (damage of the stored object).
func cachedGet[T any](ctx context.Context, c *indexCache, key string, fetch func(context.Context) ([]byte, error), decode func([]byte) (T, error)) (T, error) {
	if body := c.read(key); body != nil {
		if v, err := decode(body); err == nil {
			return v, nil
		}
		c.drop(key)
	}
	body, err := fetch(ctx)
	if err != nil {
		var zero T
		return zero, err
	}
	c.write(key, body)
	v, err := decode(body)
	if err != nil {
		c.drop(key)
	}
	return v, err
}

// readRange reads length bytes of the object key from off.
func (r *Repository) readRange(ctx context.Context, key string, off, length int64) ([]byte, error) {
	rc, err := r.store.Get(ctx, key, off, length)
	if err != nil {
		return nil, fmt.Errorf("blockdiff: get %s [%d, +%d): %w", key, off, length, err)
	}
	defer rc.Close()
	buf := make([]byte, length)
	n, err := io.ReadFull(rc, buf)
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("blockdiff: %s is shorter than its index directory says (%d bytes at %d): %w", key, n, off, ErrCorrupt)
	}
	if err != nil {
		return nil, fmt.Errorf("blockdiff: read %s: %w", key, err)
	}
	return buf, nil
}

// frameMem keeps the IDs of the frames read last in memory (a few MiB at
// most), so that neighbouring blocks of one backup do not read a frame again.
type frameMem struct {
	mu    sync.Mutex
	ids   map[frameRef][]ID
	order []frameRef // insertion order, for FIFO eviction
}

type frameRef struct {
	gen   string
	frame int
}

const frameMemMax = 128 // frames: 128 × 1,024 IDs × 32 bytes = 4 MiB

func (m *frameMem) get(k frameRef) []ID {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.ids[k]
}

func (m *frameMem) put(k frameRef, ids []ID) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.ids == nil {
		m.ids = map[frameRef][]ID{}
	}
	if _, ok := m.ids[k]; ok {
		return
	}
	if len(m.order) >= frameMemMax {
		delete(m.ids, m.order[0])
		m.order = m.order[1:]
	}
	m.ids[k] = ids
	m.order = append(m.order, k)
}

// frameIDs returns the IDs of frame i of g: from memory, the cache, or a
// ranged read of its pack.
func (r *Repository) frameIDs(ctx context.Context, g *genDir, i int) ([]ID, error) {
	ref := frameRef{g.gen, i}
	if ids := r.frameMem.get(ref); ids != nil {
		return ids, nil
	}
	f := g.frames[i]
	pack := g.packs[f.pack].key
	ids, err := cachedGet(ctx, r.cache, frameAADKey(pack, int(f.num)), func(ctx context.Context) ([]byte, error) {
		return r.readRange(ctx, pack, f.off, f.size)
	}, func(body []byte) ([]ID, error) {
		entries, err := r.openFrame(g, i, body)
		if err != nil {
			return nil, err
		}
		ids := make([]ID, len(entries))
		for j, e := range entries {
			ids[j] = e.ID
		}
		return ids, nil
	})
	if err != nil {
		return nil, err
	}
	r.frameMem.put(ref, ids)
	return ids, nil
}

// inGenerations reports whether a compacted generation that r holds lists
// id: a filter check per generation (the pack's filter is read the first
// time), and a frame read where the filter says maybe. A damaged or missing frame counts as not listing it (it costs a
// re-upload); errors of the store are returned.
func (r *Repository) inGenerations(ctx context.Context, id ID) (bool, error) {
	r.dedupMu.Lock()
	gens := r.gens
	r.dedupMu.Unlock()
	for _, g := range gens {
		i, first := g.locate(id)
		if i < 0 {
			continue
		}
		if !first {
			p := int(g.frames[i].pack)
			f, err := r.packFilter(ctx, g, p)
			if err != nil {
				return false, err
			}
			if f != nil && !bloomHas(f, g.packs[p].k, id) {
				continue
			}
		}
		ids, err := r.frameIDs(ctx, g, i)
		if isDamage(err) || errors.Is(err, objstore.ErrNotExist) {
			r.log.Warn("index frame missing or damaged: its objects will be stored again (cleanup or repair index replaces it)",
				"generation", g.gen, "frame", i, "err", err)
			continue
		}
		if err != nil {
			return false, err
		}
		if _, found := slices.BinarySearchFunc(ids, id, compareID); found {
			return true, nil
		}
	}
	return false, nil
}

// DefaultCacheDir is where cairn's binaries keep the index cache
// (Options.CacheDir) unless told otherwise: $XDG_CACHE_HOME/cairn, else
// $HOME/.cache/cairn; "" (no cache) when neither is set. getenv is
// os.Getenv or a test's stand-in.
func DefaultCacheDir(getenv func(string) string) string {
	if d := getenv("XDG_CACHE_HOME"); filepath.IsAbs(d) {
		return filepath.Join(d, "cairn")
	}
	if h := getenv("HOME"); filepath.IsAbs(h) {
		return filepath.Join(h, ".cache", "cairn")
	}
	return ""
}
