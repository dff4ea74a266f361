package blockdiff

import (
	"context"
	"fmt"
	"slices"
	"time"
)

// RepairIndexOptions tune RepairIndex.
type RepairIndexOptions struct {
	// LockWait overrides Options.LockWait for the exclusive lock.
	LockWait time.Duration
}

// RepairIndexResult says what RepairIndex found and wrote.
type RepairIndexResult struct {
	SegmentsBefore  int      `json:"segments_before"`  // index segments found
	DamagedSegments []string `json:"damaged_segments"` // of which could not be read
	Versions        int      `json:"versions"`         // manifests read
	DamagedVersions []string `json:"damaged_versions"` // manifests that could not be read
	Objects         int      `json:"objects"`          // data objects listed
	IndexEntries    int      `json:"index_entries"`    // entries of the new index
	// Unindexed are data objects left out of the new index: no valid
	// version references them (cleanup deletes them after its grace), or
	// their stored size is impossible.
	Unindexed     int     `json:"unindexed"`
	SegmentsAfter int     `json:"segments_after"`
	Duration      float64 `json:"duration_seconds"`
}

// RepairIndex rebuilds the index from the version manifests and the listing
// of data/ (restic's repair index): the new segments list every data object
// that exists and that a valid version references, with its stored size and
// plaintext length; then every old segment, readable or damaged, is deleted.
// It holds the exclusive lock, so no backup runs meanwhile, and it deletes
// no data object: a damaged manifest only leaves its objects out of the
// index (they are stored again when a backup meets them). Other processes
// notice the replaced segments and reload their dedup sets.
func (r *Repository) RepairIndex(ctx context.Context, opts RepairIndexOptions) (*RepairIndexResult, error) {
	start := time.Now()
	wait := opts.LockWait
	if wait <= 0 {
		wait = r.opts.LockWait
	}
	lock, err := r.lock(ctx, LockExclusive, "repair index", wait)
	if err != nil {
		return nil, err
	}
	defer lock.Release(ctx)
	res := &RepairIndexResult{DamagedSegments: []string{}, DamagedVersions: []string{}}

	old, err := r.scanIndex(ctx)
	if err != nil {
		return nil, err
	}
	res.SegmentsBefore = old.Segments + old.Generations
	// Which index objects are damaged is only reported: all of them go.
	for _, err := range old.Entries(ctx) {
		if err != nil {
			return nil, err
		}
	}
	res.DamagedSegments = append(res.DamagedSegments, old.Damaged...)

	versions, err := r.listFull(ctx, Filter{})
	if err != nil {
		return nil, err
	}
	res.Versions = len(versions)
	lengths := map[ID]int64{} // objects valid versions reference -> plaintext length
	for _, v := range versions {
		switch v.Status {
		case StatusDamaged:
			res.DamagedVersions = append(res.DamagedVersions, v.ID)
		case StatusValid:
			for _, ref := range v.refs {
				if !ref.Sparse {
					lengths[ref.ID] = ref.Length
				}
			}
		}
	}

	var entries []indexEntry
	for info, err := range r.store.List(ctx, "data/") {
		if err != nil {
			return nil, fmt.Errorf("blockdiff: repair index: list data: %w", err)
		}
		id, ok := parseDataKey(info.Key)
		if !ok {
			continue
		}
		res.Objects++
		length, ok := lengths[id]
		if !ok || info.Size < 1 || info.Size > MaxBlockSize*4+1024 {
			res.Unindexed++
			continue
		}
		entries = append(entries, indexEntry{ID: id, Stored: info.Size, Length: length})
	}
	slices.SortFunc(entries, func(a, b indexEntry) int { return compareID(a.ID, b.ID) })
	res.IndexEntries = len(entries)

	// New segments first, then the old ones go: a crash in between leaves
	// extra entries for objects that exist, never a missing one.
	if err := lock.Check(); err != nil {
		return nil, err
	}
	// The new index is a compacted generation (format 3, indexfmt.go).
	if _, err := r.writeCompactedIndex(ctx, func(yield func(indexEntry, error) bool) {
		for _, e := range entries {
			if !yield(e, nil) {
				return
			}
		}
	}, compactOptions{Check: lock.Check}); err != nil {
		return nil, err
	}
	if err := r.deleteIndexKeys(ctx, old.Keys, nil); err != nil {
		return nil, fmt.Errorf("blockdiff: repair index: %w", err)
	}
	res.SegmentsAfter = 1
	res.Duration = time.Since(start).Seconds()
	r.log.Info("index repaired", "segments_before", res.SegmentsBefore, "damaged_segments", len(res.DamagedSegments),
		"entries", res.IndexEntries, "unindexed", res.Unindexed, "damaged_versions", len(res.DamagedVersions))
	return res, nil
}
