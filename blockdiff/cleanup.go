package blockdiff

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/cairn-backup/cairn/objstore"
)

// DefaultGrace is the grace period of Cleanup when CleanupOptions.Grace is 0.
const DefaultGrace = time.Hour

// CleanupOptions tune Cleanup.
type CleanupOptions struct {
	// Grace keeps unreferenced objects younger than this (by the store's
	// clock): 0 means DefaultGrace, a negative value no grace at all.
	Grace time.Duration
	// DryRun computes what would be deleted and changes nothing; it takes a
	// shared lock only.
	DryRun bool
	// LockWait overrides Options.LockWait for the exclusive lock.
	LockWait time.Duration
}

// CleanupResult says what Cleanup found and did.
type CleanupResult struct {
	DryRun          bool  `json:"dry_run"`
	Versions        int   `json:"versions"`
	Objects         int   `json:"objects"`          // data objects listed
	StoredBytes     int64 `json:"stored_bytes"`     // their size
	Referenced      int   `json:"referenced"`       // objects some version references
	Young           int   `json:"young"`            // unreferenced, kept by the grace period
	Deleted         int   `json:"deleted"`          // unreferenced objects deleted (or, dry, to delete)
	DeletedBytes    int64 `json:"deleted_bytes"`    // their size
	Missing         int   `json:"missing"`          // referenced objects not found (run scrub)
	SegmentsBefore  int   `json:"segments_before"`  // index segments before compaction
	SegmentsAfter   int   `json:"segments_after"`   // and after
	IndexEntries    int   `json:"index_entries"`    // entries of the compacted index
	MarkedAbandoned int   `json:"marked_abandoned"` // incomplete versions older than the grace marked invalid
	// DamagedSegments are the index segments that did not decode; the
	// compaction replaced them (a dry run only reports them).
	DamagedSegments []string `json:"damaged_segments,omitempty"`
	// TempFilesRemoved counts the temporary files of killed writes that
	// the store kept (the file backend's .cairn-tmp-*) and cleanup removed.
	TempFilesRemoved int     `json:"temp_files_removed"`
	Duration         float64 `json:"duration_seconds"`
}

// Cleanup deletes the data objects that no version references and that are
// older than the grace period, and compacts the index segments into as few
// as possible, listing only objects that exist and that a valid version
// references (or that are young). It holds the exclusive lock, so no backup
// runs meanwhile (FORMAT.md, "Locks" and "Cleanup"): it waits for running
// backups to finish, and new backups wait for it. Incomplete versions older
// than the grace period are from backups that died; they are marked invalid.
func (r *Repository) Cleanup(ctx context.Context, opts CleanupOptions) (*CleanupResult, error) {
	start := time.Now()
	grace := opts.Grace
	if grace == 0 {
		grace = DefaultGrace
	}
	grace = max(grace, 0)
	wait := opts.LockWait
	if wait <= 0 {
		wait = r.opts.LockWait
	}
	kind := LockExclusive
	if opts.DryRun {
		kind = LockShared
	}
	lock, err := r.lock(ctx, kind, "cleanup", wait)
	if err != nil {
		return nil, err
	}
	defer lock.Release(ctx)
	if !opts.DryRun {
		r.upgradeConfig(ctx) // a version-1 encrypted config gets its MAC (config.go)
	}
	cutoff := lock.StoreTime().Add(-grace)
	res := &CleanupResult{DryRun: opts.DryRun}

	// 1. Every reference of every manifest. An unreadable manifest fails
	// the cleanup: it might reference anything.
	versions, err := r.listFull(ctx, Filter{})
	if err != nil {
		return nil, err
	}
	if err := refuseDamaged(versions); err != nil {
		return nil, err
	}
	res.Versions = len(versions)
	refs := map[ID]int64{} // object -> plaintext length
	validRef := map[ID]bool{}
	var abandoned []*Version
	for _, v := range versions {
		for _, ref := range v.refs {
			if !ref.Sparse {
				refs[ref.ID] = ref.Length
				if v.Status == StatusValid {
					validRef[ref.ID] = true
				}
			}
		}
		if v.Status == StatusIncomplete && v.Created.Before(cutoff) {
			abandoned = append(abandoned, v)
		}
	}
	// 2. The index as it is, and the data objects.
	// A damaged segment is left out: the index is only a dedup hint, and
	// what is deleted is decided by the manifests and data/ alone. The
	// compaction below replaces it.
	idx, segs, damagedSegs, err := r.readIndex(ctx)
	if err != nil {
		return nil, err
	}
	res.SegmentsBefore = len(segs) + len(damagedSegs)
	res.DamagedSegments = damagedSegs
	var del []ID
	var keep []indexEntry
	found := map[ID]bool{}
	for info, err := range r.store.List(ctx, "data/") {
		if err != nil {
			return nil, fmt.Errorf("blockdiff: list data: %w", err)
		}
		id, ok := parseDataKey(info.Key)
		if !ok {
			continue // not ours: never deleted
		}
		found[id] = true
		res.Objects++
		res.StoredBytes += info.Size
		length, referenced := refs[id]
		switch {
		case referenced:
			res.Referenced++
			if validRef[id] { // objects only invalid versions reference stay out of the index
				keep = append(keep, indexEntry{ID: id, Stored: info.Size, Length: length})
			}
		case !info.ModTime.Before(cutoff):
			res.Young++
			if e, ok := idx[id]; ok {
				keep = append(keep, indexEntry{ID: id, Stored: info.Size, Length: e.Length})
			}
		default:
			del = append(del, id)
			res.Deleted++
			res.DeletedBytes += info.Size
		}
	}
	for id := range refs {
		if !found[id] {
			res.Missing++
		}
	}
	if res.Missing > 0 {
		r.log.Warn("versions reference missing objects: run scrub", "missing", res.Missing)
	}
	res.IndexEntries = len(keep)
	if opts.DryRun {
		res.SegmentsAfter = res.SegmentsBefore
		res.Duration = time.Since(start).Seconds()
		return res, nil
	}

	// 3. Compact: the new segments first, then the old ones go, so that a
	// crash leaves extra entries (objects not deleted yet) but never drops
	// an object that stays. Every segment that lists a deleted object is
	// replaced, which tells other processes to reload their dedup sets.
	if len(del) > 0 || len(segs) > 1 || len(keep) != len(idx) || len(damagedSegs) > 0 {
		slices.SortFunc(keep, func(a, b indexEntry) int { return compareID(a.ID, b.ID) })
		if err := lock.Check(); err != nil {
			return nil, err
		}
		if err := r.putSegments(ctx, keep); err != nil {
			return nil, err
		}
		for _, key := range append(segs, damagedSegs...) {
			if err := r.store.Delete(ctx, key); err != nil {
				return nil, fmt.Errorf("blockdiff: delete index segment %s: %w", key, err)
			}
		}
		res.SegmentsAfter = (len(keep) + maxSegmentEntries - 1) / maxSegmentEntries
	} else {
		res.SegmentsAfter = res.SegmentsBefore
	}

	// 4. Delete the unreferenced objects, while the lock holds.
	var mu sync.Mutex
	deleted := 0
	err = r.parallel(ctx, len(del), func(ctx context.Context, i int) error {
		if err := lock.Check(); err != nil {
			return err
		}
		if err := r.store.Delete(ctx, dataKey(del[i])); err != nil {
			return fmt.Errorf("blockdiff: delete %s: %w", dataKey(del[i]), err)
		}
		mu.Lock()
		deleted++
		mu.Unlock()
		return nil
	})
	if err != nil {
		res.Deleted = deleted
		return res, err
	}

	// 5. Temporary files of writes that were killed (the file backend's):
	// as old as the grace, and a minute at least, so that no write of a
	// lock running meanwhile loses its file.
	tmpCutoff := lock.StoreTime().Add(-max(grace, time.Minute))
	if n, ok, err := objstore.RemoveTemp(ctx, r.store, tmpCutoff); err != nil {
		r.log.Warn("could not remove the temporary files of killed writes", "err", err)
	} else if ok {
		res.TempFilesRemoved = n
	}

	// 6. Backups that died left incomplete manifests: say so.
	for _, v := range abandoned {
		_, err := r.update(ctx, v.ID, func(v *Version) error {
			if v.Status != StatusIncomplete {
				return errAlreadyFinished
			}
			v.Status, v.Error = StatusFailed, "the backup did not finish (found incomplete by cleanup)"
			return nil
		})
		if err == nil {
			res.MarkedAbandoned++
		} else if !errors.Is(err, errAlreadyFinished) && !errors.Is(err, ErrVersionNotFound) {
			r.log.Warn("could not mark an abandoned version invalid", "version", v.ID, "err", err)
		}
	}
	res.Duration = time.Since(start).Seconds()
	r.log.Info("cleanup done", "objects", res.Objects, "deleted", res.Deleted, "deleted_bytes", res.DeletedBytes,
		"young", res.Young, "segments_before", res.SegmentsBefore, "segments_after", res.SegmentsAfter)
	return res, nil
}

var errAlreadyFinished = errors.New("version is not incomplete any more")

// compareID orders IDs bytewise.
func compareID(a, b ID) int {
	for i := range a {
		if a[i] != b[i] {
			return int(a[i]) - int(b[i])
		}
	}
	return 0
}

// refuseDamaged fails a cleanup when a manifest is damaged: what it
// references is unknown, so no object can be proven unreferenced.
func refuseDamaged(versions []*Version) error {
	var ids []string
	for _, v := range versions {
		if v.Status == StatusDamaged {
			ids = append(ids, v.ID)
		}
	}
	if len(ids) == 0 {
		return nil
	}
	return fmt.Errorf("blockdiff: cleanup: %d damaged version manifests (%s): what they reference is unknown, so nothing can be deleted safely; "+
		"remove them (rm) or put back a good copy, then run cleanup again: %w", len(ids), strings.Join(ids, ", "), ErrCorrupt)
}
