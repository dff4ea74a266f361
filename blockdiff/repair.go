package blockdiff

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
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
	damaged, err := r.damagedIndex(ctx, old)
	if err != nil {
		return nil, err
	}
	res.DamagedSegments = append(res.DamagedSegments, damaged...)

	versions, err := r.List(ctx, Filter{})
	if err != nil {
		return nil, err
	}
	res.Versions = len(versions)
	var valid []*Version
	for _, v := range versions {
		switch v.Status {
		case StatusDamaged:
			res.DamagedVersions = append(res.DamagedVersions, v.ID)
		case StatusValid:
			valid = append(valid, v)
		}
	}
	// The objects valid versions reference, in sorted runs on local disk
	// (mark.go), merge-joined with the listing of data/: the new index is
	// written from the join as it goes, in ID order. A manifest whose
	// references are damaged is reported; what of it was read stays
	// marked, which is harmless: the index only lists objects that exist.
	sorter := newMarkSorter("")
	defer sorter.close()
	var dmu sync.Mutex
	err = r.markVersionsFunc(ctx, valid, sorter, nil, func(v *Version, err error) {
		dmu.Lock()
		defer dmu.Unlock()
		res.DamagedVersions = append(res.DamagedVersions, v.ID)
	})
	if err != nil {
		return nil, err
	}
	slices.Sort(res.DamagedVersions)
	marks, err := sorter.finish()
	if err != nil {
		return nil, err
	}
	data, err := r.listData(ctx, "")
	if err != nil {
		return nil, err
	}
	defer data.close()
	entries := func(yield func(indexEntry, error) bool) {
		stop := errors.New("stopped")
		err := joinMarks(data, marks, nil, func(j *joinRow) error {
			if !j.listed {
				return nil
			}
			res.Objects++
			if j.mark.flags&markValid == 0 || j.obj.size < 1 || j.obj.size > MaxBlockSize*4+1024 {
				res.Unindexed++
				return nil
			}
			res.IndexEntries++
			if !yield(indexEntry{ID: j.id, Stored: j.obj.size, Length: int64(j.mark.length)}, nil) {
				return stop
			}
			return nil
		})
		if err != nil && err != stop {
			yield(indexEntry{}, err)
		}
	}

	// The new index first, then the old one goes: a crash in between
	// leaves extra entries for objects that exist, never a missing one.
	if err := lock.Check(); err != nil {
		return nil, err
	}
	// The new index is a compacted generation (format 3, indexfmt.go).
	if _, err := r.writeCompactedIndex(ctx, entries, compactOptions{Check: lock.Check}); err != nil {
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
