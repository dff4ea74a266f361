package blockdiff

import (
	"context"
	"errors"
	"fmt"
	"strings"
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
	// TempDir is the local directory of the sorted runs of referenced
	// objects and of the spilled listing of data/ (about 40 bytes per
	// reference and 48 per object at most, removed when Cleanup returns);
	// "" means os.TempDir().
	TempDir string
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

	// 1. The headers of every manifest. A damaged one stops the cleanup:
	// it might reference anything.
	versions, err := r.List(ctx, Filter{})
	if err != nil {
		return nil, err
	}
	if err := refuseDamaged(versions); err != nil {
		return nil, err
	}
	res.Versions = len(versions)
	var abandoned []string
	for _, v := range versions {
		if v.Status == StatusIncomplete && v.Created.Before(cutoff) {
			abandoned = append(abandoned, v.ID)
		}
	}
	// 2. Mark: every reference of every manifest (valid and invalid ones)
	// into sorted runs on local disk. A manifest whose references turn out
	// damaged stops the cleanup here, before anything is deleted.
	sorter := newMarkSorter(opts.TempDir)
	defer sorter.close()
	if err := r.markVersions(ctx, versions, sorter, nil); err != nil {
		if isDamage(err) {
			return nil, fmt.Errorf("blockdiff: cleanup: a version manifest is damaged (what it references is unknown, so nothing can be deleted safely; "+
				"remove it (rm) or put back a good copy, then run cleanup again): %w", err)
		}
		return nil, err
	}
	marks, err := sorter.finish()
	if err != nil {
		return nil, err
	}
	// 3. Sweep: the marks, the listing of data/ and the index, all in ID
	// order, merge-joined. What stays in the index and what goes is
	// written to temporary files, acted on after the join.
	scan, err := r.scanIndex(ctx)
	if err != nil {
		return nil, err
	}
	res.SegmentsBefore = scan.Segments + scan.Generations
	sw, err := newSweepFiles(opts.TempDir)
	if err != nil {
		return nil, err
	}
	defer sw.close()
	data, err := r.listData(ctx, opts.TempDir)
	if err != nil {
		return nil, err
	}
	defer data.close()
	idx, err := r.sortedIndex(ctx, scan, opts.TempDir)
	if err != nil {
		return nil, err
	}
	defer idx.stop()
	var indexed, keep int
	err = joinMarks(data, marks, idx.next, func(j *joinRow) error {
		if j.inIndex {
			indexed++
		}
		if !j.listed {
			if j.mark.flags&markRef != 0 {
				res.Missing++
			}
			return nil
		}
		res.Objects++
		res.StoredBytes += j.obj.size
		switch {
		case j.mark.flags&markRef != 0:
			res.Referenced++
			if j.mark.flags&markValid != 0 { // objects only invalid versions reference stay out of the index
				keep++
				return sw.keep(indexEntry{ID: j.obj.id, Stored: j.obj.size, Length: int64(j.mark.length)})
			}
		case !j.obj.modTime().Before(cutoff):
			res.Young++
			if j.inIndex {
				keep++
				return sw.keep(indexEntry{ID: j.obj.id, Stored: j.obj.size, Length: j.idx.Length})
			}
		default:
			res.Deleted++
			res.DeletedBytes += j.obj.size
			return sw.del(j.obj.id)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	damagedIdx := idx.damaged()
	res.DamagedSegments = damagedIdx
	data.close()
	sorter.close()
	idx.stop()
	if err := sw.flush(); err != nil {
		return nil, err
	}
	if res.Missing > 0 {
		r.log.Warn("versions reference missing objects: run scrub", "missing", res.Missing)
	}
	res.IndexEntries = keep
	if opts.DryRun {
		res.SegmentsAfter = res.SegmentsBefore
		res.Duration = time.Since(start).Seconds()
		return res, nil
	}

	// 4. Compact: the new index first (a generation, written by
	// writeCompactedIndex from the sorted survivors), then the old index
	// objects go, so that a crash leaves extra entries (objects not
	// deleted yet) but never drops an object that stays. Every index
	// object that lists a deleted object is replaced, which tells other
	// processes to reload their dedup sets.
	if res.Deleted > 0 || res.SegmentsBefore > 1 || keep != indexed || len(damagedIdx) > 0 || scan.Segments > 0 {
		if err := lock.Check(); err != nil {
			return nil, err
		}
		if _, err := r.writeCompactedIndex(ctx, sw.kept(), compactOptions{Check: lock.Check}); err != nil {
			return nil, err
		}
		if err := r.deleteIndexKeys(ctx, scan.Keys, lock.Check); err != nil {
			return nil, err
		}
		res.SegmentsAfter = 1
	} else {
		res.SegmentsAfter = res.SegmentsBefore
	}

	// 5. Delete the unreferenced objects, while the lock holds, a batch
	// at a time from the temporary file.
	deleted, err := sw.deleteAll(ctx, r, lock.Check)
	if err != nil {
		res.Deleted = deleted
		return res, err
	}

	// 6. Temporary files of writes that were killed (the file backend's):
	// as old as the grace, and a minute at least, so that no write of a
	// lock running meanwhile loses its file.
	tmpCutoff := lock.StoreTime().Add(-max(grace, time.Minute))
	if n, ok, err := objstore.RemoveTemp(ctx, r.store, tmpCutoff); err != nil {
		r.log.Warn("could not remove the temporary files of killed writes", "err", err)
	} else if ok {
		res.TempFilesRemoved = n
	}

	// 7. Backups that died left incomplete manifests: say so.
	for _, id := range abandoned {
		_, err := r.update(ctx, id, func(v *Version) error {
			if v.Status != StatusIncomplete {
				return errAlreadyFinished
			}
			v.Status, v.Error = StatusFailed, "the backup did not finish (found incomplete by cleanup)"
			return nil
		})
		if err == nil {
			res.MarkedAbandoned++
		} else if !errors.Is(err, errAlreadyFinished) && !errors.Is(err, ErrVersionNotFound) {
			r.log.Warn("could not mark an abandoned version invalid", "version", id, "err", err)
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
