package blockdiff

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"

	"github.com/cairn-backup/cairn/objstore"
)

// The dedup set of a Repository is the union of
//   - the uncompacted index segments it has read (index/<32 hex>: what
//     backups wrote since the last compaction), held in memory (r.dedup);
//   - the compacted generations (index/c-<gen>, indexfmt.go), of which only
//     the directories are held (the first ID of each frame: about 0.06 bytes
//     an entry) and the Bloom filters of the packs looked up so far (10 bits
//     an entry of those packs); an ID that a filter may hold is looked up in
//     its frame (inGenerations, through the cache);
//   - the objects its running backups stored (pending until their segment
//     is written), also in r.dedup.
//
// It must never name an object that does not exist, or a backup would
// reference a missing block. Cleanup and scrub repair only ever remove
// objects after replacing every index object that lists them, so a process
// notices that its set may be stale when a segment or directory it read has
// vanished: it then reads the index again from scratch (refreshDedup).
//
// Backups load the set lazily, at their first lookup (backupRun.ensureIndex):
// a differential backup that reads no block reads no index.

// listIndex returns the keys of the uncompacted index segments (not those
// of compacted generations: see scanIndex).
func (r *Repository) listIndex(ctx context.Context) ([]string, error) {
	s, err := r.scanIndex(ctx)
	if err != nil {
		return nil, err
	}
	return s.segs, nil
}

// readSegments reads index segments in parallel and calls add for each (under
// a mutex). Segments deleted since they were listed are skipped and left out
// of the returned keys: a missing entry only costs a re-upload. Damaged
// segments (they do not decode or authenticate) are skipped too, logged, and
// returned in damaged: an index entry is only ever a dedup hint, so a lost
// segment costs re-uploads, never data. Errors of the store fail the read.
func (r *Repository) readSegments(ctx context.Context, keys []string, add func(key string, e []indexEntry)) (read, damaged []string, err error) {
	var mu sync.Mutex
	state := make([]byte, len(keys)) // 0 gone, 1 read, 2 damaged
	err = r.parallel(ctx, len(keys), func(ctx context.Context, i int) error {
		plain, err := r.getMeta(ctx, keys[i])
		if errors.Is(err, objstore.ErrNotExist) {
			return nil
		}
		var entries []indexEntry
		if err == nil {
			if entries, err = decodeIndex(plain); err != nil {
				err = fmt.Errorf("blockdiff: %s: %w", keys[i], err)
			}
		}
		if isDamage(err) {
			r.log.Warn("damaged index segment: treated as absent (costs only dedup; cleanup or repair index replaces it)",
				"segment", keys[i], "err", err)
			state[i] = 2
			return nil
		}
		if err != nil {
			return err
		}
		mu.Lock()
		defer mu.Unlock()
		state[i] = 1
		add(keys[i], entries)
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	for i, st := range state {
		switch st {
		case 1:
			read = append(read, keys[i])
		case 2:
			damaged = append(damaged, keys[i])
		}
	}
	return read, damaged, nil
}

// refreshDedup brings the dedup set up to date with the index: new segments
// are merged and new generations' directories read; if a segment or
// directory read earlier has vanished (compaction by cleanup, or a scrub's
// repair), the set is rebuilt from the current index plus what running
// backups of this process stored.
func (r *Repository) refreshDedup(ctx context.Context) error {
	r.refreshMu.Lock()
	defer r.refreshMu.Unlock()
	s, err := r.scanIndex(ctx)
	if err != nil {
		return err
	}
	r.dedupMu.Lock()
	loaded, held := r.dedupLoaded, r.dedupSegs
	r.dedupMu.Unlock()
	cur := make(map[string]struct{}, len(s.segs)+len(s.dirs))
	for _, k := range s.segs {
		cur[k] = struct{}{}
	}
	for _, gen := range s.dirs {
		cur[dirKey(gen)] = struct{}{}
	}
	full := !loaded
	for k := range held {
		if _, ok := cur[k]; !ok {
			full = true
			break
		}
	}
	fresh := func(keys []string, key func(string) string) []string {
		if full {
			return keys
		}
		var out []string
		for _, k := range keys {
			if _, ok := held[key(k)]; !ok {
				out = append(out, k)
			}
		}
		return out
	}
	freshSegs := fresh(s.segs, func(k string) string { return k })
	freshDirs := fresh(s.dirs, dirKey)
	if !full && len(freshSegs) == 0 && len(freshDirs) == 0 {
		return nil
	}
	set := make(map[ID]struct{})
	read, _, err := r.readSegments(ctx, freshSegs, func(_ string, entries []indexEntry) {
		for _, e := range entries {
			set[e.ID] = struct{}{}
		}
	})
	if err != nil {
		return err
	}
	var gens []*genDir
	for _, gen := range freshDirs {
		g, err := r.readDir(ctx, gen)
		if errors.Is(err, objstore.ErrNotExist) {
			continue
		}
		if isDamage(err) {
			r.log.Warn("damaged index directory: its generation is treated as absent (costs only dedup; cleanup or repair index replaces it)",
				"directory", dirKey(gen), "err", err)
			continue
		}
		if err != nil {
			return err
		}
		gens = append(gens, g)
		read = append(read, g.key)
	}
	r.dedupMu.Lock()
	defer r.dedupMu.Unlock()
	if full {
		for id := range r.pending {
			set[id] = struct{}{}
		}
		r.dedup, r.dedupLoaded, r.gens = set, true, gens
		r.dedupSegs = make(map[string]struct{}, len(read))
		if loaded {
			r.log.Info("index was compacted or repaired since it was read: dedup set reloaded", "segments", len(s.segs),
				"generations", len(gens), "objects_in_memory", len(set))
		}
		live := map[string]bool{} // the cache keeps only the generations of the index
		for _, gen := range s.dirs {
			live[gen] = true
		}
		r.cache.prune(live)
	} else {
		for id := range set {
			r.dedup[id] = struct{}{}
		}
		r.gens = append(slices.Clip(r.gens), gens...)
		r.dedupSegs = maps.Clone(r.dedupSegs)
	}
	for _, k := range read {
		r.dedupSegs[k] = struct{}{}
	}
	if n := len(r.dedup); full && n >= uncompactedWarn {
		r.log.Warn("the index holds many objects not yet compacted: each backup keeps them in memory until cleanup compacts the index",
			"objects_uncompacted", n, "approx_memory_mib", n*dedupEntryBytes>>20)
	}
	return nil
}

// uncompactedWarn is the size of the uncompacted part of the index (60 MiB
// of a backup's memory) above which loading it says that cleanup would
// bound it; an upgraded format-2 repository holds every object there until
// its first cleanup. A variable for tests.
var uncompactedWarn = 1 << 20

// dedupEntryBytes is the memory of one ID in the dedup set (Options).
const dedupEntryBytes = 60

// loadDedup brings the set of known objects up to date with the index
// (refreshDedup).
func (r *Repository) loadDedup(ctx context.Context) error {
	return r.refreshDedup(ctx)
}

// claim reports whether id is new to the repository. For a new ID it returns
// the flight the caller must land when its upload ends; for an ID whose upload
// another block started and has not finished, it returns that flight to wait
// on. lookup says that a compacted generation may list id: the caller must
// ask inGenerations, then claimAfterLookup when it does not.
func (r *Repository) claim(id ID) (isNew bool, f *flight, lookup bool) {
	r.dedupMu.Lock()
	defer r.dedupMu.Unlock()
	if _, ok := r.dedup[id]; ok {
		return false, nil, false
	}
	if f, ok := r.inflight[id]; ok {
		return false, f, false
	}
	for _, g := range r.gens {
		if g.mayHold(id) {
			return false, nil, true
		}
	}
	return true, r.takeOff(id), false
}

// claimAfterLookup is claim for an ID that no generation lists.
func (r *Repository) claimAfterLookup(id ID) (isNew bool, f *flight) {
	r.dedupMu.Lock()
	defer r.dedupMu.Unlock()
	if _, ok := r.dedup[id]; ok {
		return false, nil
	}
	if f, ok := r.inflight[id]; ok {
		return false, f
	}
	return true, r.takeOff(id)
}

// takeOff starts the flight of id. Called with dedupMu held.
func (r *Repository) takeOff(id ID) *flight {
	if r.inflight == nil {
		r.inflight = make(map[ID]*flight)
	}
	f := &flight{done: make(chan struct{})}
	r.inflight[id] = f
	return f
}

// land ends a flight: on success the ID joins the dedup set; on failure it is
// forgotten so that a later backup uploads it again.
func (r *Repository) land(id ID, f *flight, err error) {
	r.dedupMu.Lock()
	delete(r.inflight, id)
	if err == nil {
		r.dedup[id] = struct{}{}
		r.addPending(id)
	}
	r.dedupMu.Unlock()
	f.err = err
	close(f.done)
}

// addPending records an object a running backup of this process stored.
// Called with dedupMu held.
func (r *Repository) addPending(id ID) {
	if r.pending == nil {
		r.pending = make(map[ID]int)
	}
	r.pending[id]++
}

// donePending is called once a backup's index segment write ended: its
// objects are in the index now, under key, or (when the write failed)
// forgotten, so that the next backup stores them again rather than trust an
// object no segment lists. A written segment joins the segments the set
// holds, so that its replacement by a scrub's repair or a cleanup's
// compaction is noticed like that of any segment read.
func (r *Repository) donePending(key string, entries []indexEntry, written bool) {
	r.dedupMu.Lock()
	defer r.dedupMu.Unlock()
	if written && r.dedupLoaded {
		segs := maps.Clone(r.dedupSegs) // copy on write: refreshDedup reads it unlocked
		if segs == nil {
			segs = map[string]struct{}{}
		}
		segs[key] = struct{}{}
		r.dedupSegs = segs
	}
	for _, e := range entries {
		if n := r.pending[e.ID] - 1; n > 0 {
			r.pending[e.ID] = n
		} else {
			delete(r.pending, e.ID)
			if !written {
				delete(r.dedup, e.ID)
			}
		}
	}
}

// readIndex reads every index entry (uncompacted segments and compacted
// generations) into one map, by object, and returns the keys of the index
// objects read and of the damaged ones (skipped). It holds the whole index
// in memory: what cleanup and scrub did before format 3; bounded-memory
// callers iterate scanIndex's Entries instead.
func (r *Repository) readIndex(ctx context.Context) (idx map[ID]indexEntry, read, damaged []string, err error) {
	s, err := r.scanIndex(ctx)
	if err != nil {
		return nil, nil, nil, err
	}
	idx = make(map[ID]indexEntry)
	for e, err := range s.Entries(ctx) {
		if err != nil {
			return nil, nil, nil, err
		}
		idx[e.ID] = e
	}
	bad := map[string]bool{}
	for _, k := range s.Damaged {
		bad[k] = true
	}
	for _, k := range s.Keys {
		if !bad[k] {
			read = append(read, k)
		}
	}
	return idx, read, s.Damaged, nil
}
