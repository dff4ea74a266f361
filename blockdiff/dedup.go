package blockdiff

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"sync"

	"github.com/cairn-backup/cairn/objstore"
)

// The dedup set of a Repository is the union of the index segments it has
// read plus the objects its running backups stored (pending until their
// segment is written). It must never name an object that does not exist, or
// a backup would reference a missing block. Cleanup and scrub repair only
// ever remove objects after replacing every index segment that lists them,
// so a process notices that its set may be stale when a segment it read has
// vanished: it then reads the index again from scratch (refreshDedup).

// listIndex returns the keys of the index segments.
func (r *Repository) listIndex(ctx context.Context) ([]string, error) {
	var keys []string
	for info, err := range r.store.List(ctx, "index/") {
		if err != nil {
			return nil, fmt.Errorf("blockdiff: list index: %w", err)
		}
		keys = append(keys, info.Key)
	}
	return keys, nil
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
// are merged; if a segment read earlier has vanished (compaction by cleanup,
// or a scrub's repair), the set is rebuilt from the current segments plus
// what running backups of this process stored.
func (r *Repository) refreshDedup(ctx context.Context) error {
	keys, err := r.listIndex(ctx)
	if err != nil {
		return err
	}
	r.dedupMu.Lock()
	loaded, segs := r.dedupLoaded, r.dedupSegs
	r.dedupMu.Unlock()
	cur := make(map[string]struct{}, len(keys))
	for _, k := range keys {
		cur[k] = struct{}{}
	}
	full := !loaded
	for k := range segs {
		if _, ok := cur[k]; !ok {
			full = true
			break
		}
	}
	fresh := keys
	if !full {
		fresh = fresh[:0:0]
		for _, k := range keys {
			if _, ok := segs[k]; !ok {
				fresh = append(fresh, k)
			}
		}
		if len(fresh) == 0 {
			return nil
		}
	}
	set := make(map[ID]struct{})
	read, _, err := r.readSegments(ctx, fresh, func(_ string, entries []indexEntry) {
		for _, e := range entries {
			set[e.ID] = struct{}{}
		}
	})
	if err != nil {
		return err
	}
	r.dedupMu.Lock()
	defer r.dedupMu.Unlock()
	if full {
		for id := range r.pending {
			set[id] = struct{}{}
		}
		r.dedup, r.dedupLoaded = set, true
		r.dedupSegs = make(map[string]struct{}, len(read))
		if loaded {
			r.log.Info("index was compacted or repaired since it was read: dedup set reloaded", "segments", len(read), "objects", len(set))
		}
	} else {
		for id := range set {
			r.dedup[id] = struct{}{}
		}
		r.dedupSegs = maps.Clone(r.dedupSegs)
	}
	for _, k := range read {
		r.dedupSegs[k] = struct{}{}
	}
	return nil
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

// readIndex reads every index segment into one map, by object, and returns
// the keys of the segments read and of the damaged ones (skipped).
func (r *Repository) readIndex(ctx context.Context) (idx map[ID]indexEntry, read, damaged []string, err error) {
	keys, err := r.listIndex(ctx)
	if err != nil {
		return nil, nil, nil, err
	}
	idx = make(map[ID]indexEntry)
	read, damaged, err = r.readSegments(ctx, keys, func(_ string, entries []indexEntry) {
		for _, e := range entries {
			idx[e.ID] = e
		}
	})
	return idx, read, damaged, err
}
