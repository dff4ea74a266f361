package blockdiff

import (
	"context"
	"errors"
	"sync/atomic"
)

// StorageStats describe what a repository stores and how well it
// deduplicates.
type StorageStats struct {
	Versions           int   `json:"versions"`
	ValidVersions      int   `json:"valid_versions"`
	InvalidVersions    int   `json:"invalid_versions"`
	IncompleteVersions int   `json:"incomplete_versions"`
	FailedVersions     int   `json:"failed_versions"`
	DamagedVersions    int   `json:"damaged_versions"` // manifests that cannot be read (List's StatusDamaged)
	ProtectedVersions  int   `json:"protected_versions"`
	Objects            int   `json:"objects"`      // data objects
	StoredBytes        int64 `json:"stored_bytes"` // their size in the store
	// ReferencedObjects and ReferencedStoredBytes count the objects some
	// version references; the rest is what cleanup would reclaim (after
	// the grace period).
	ReferencedObjects     int   `json:"referenced_objects"`
	ReferencedStoredBytes int64 `json:"referenced_stored_bytes"`
	UnreferencedObjects   int   `json:"unreferenced_objects"`
	UnreferencedBytes     int64 `json:"unreferenced_bytes"`
	MissingObjects        int   `json:"missing_objects"` // referenced but not found
	// LogicalBytes is the sum of the sizes of the valid versions, of which
	// SparseBytes are zeros stored as nothing.
	LogicalBytes int64 `json:"logical_bytes"`
	SparseBytes  int64 `json:"sparse_bytes"`
	// UniqueBytes is the plaintext size of the distinct objects valid
	// versions reference.
	UniqueBytes int64 `json:"unique_bytes"`
	// DedupRatio is (LogicalBytes-SparseBytes)/UniqueBytes: how many times
	// each stored byte is used. CompressionRatio is UniqueBytes over the
	// stored size of those objects. Both are 0 for an empty repository.
	DedupRatio       float64 `json:"dedup_ratio"`
	CompressionRatio float64 `json:"compression_ratio"`
	IndexSegments    int     `json:"index_segments"`
}

// StorageStats lists the versions, the data objects and the index segments
// and sums them up. It takes no lock: while backups or a cleanup run, the
// numbers are a moment's picture. The references are marked in sorted runs
// on local disk (os.TempDir) and merge-joined with the listing of data/, as
// cleanup does, so memory does not grow with the repository.
func (r *Repository) StorageStats(ctx context.Context) (*StorageStats, error) {
	versions, err := r.List(ctx, Filter{})
	if err != nil {
		return nil, err
	}
	st := &StorageStats{Versions: len(versions)}
	var readable []*Version
	for _, v := range versions {
		switch v.Status {
		case StatusValid:
			st.ValidVersions++
			st.LogicalBytes += v.Size
		case StatusInvalid:
			st.InvalidVersions++
		case StatusFailed:
			st.FailedVersions++
		case StatusDamaged:
			st.DamagedVersions++
		default:
			st.IncompleteVersions++
		}
		if v.Protected {
			st.ProtectedVersions++
		}
		if v.Status != StatusDamaged {
			readable = append(readable, v)
		}
	}
	sorter := newMarkSorter("")
	defer sorter.close()
	var sparse atomic.Int64
	err = r.parallel(ctx, len(readable), func(ctx context.Context, i int) error {
		v := readable[i]
		flags := markRef
		if v.Status == StatusValid {
			flags |= markValid
		}
		batch := make([]markRec, 0, 4096)
		_, err := r.scanVersion(ctx, v.ID, nil, func(ref Ref) error {
			if ref.Sparse {
				if v.Status == StatusValid {
					sparse.Add(ref.Length)
				}
				return nil
			}
			batch = append(batch, markRec{id: ref.ID, length: uint32(ref.Length), flags: flags})
			if len(batch) == cap(batch) {
				if err := sorter.add(batch); err != nil {
					return err
				}
				batch = batch[:0]
			}
			return nil
		})
		if errors.Is(err, ErrVersionNotFound) {
			return nil
		}
		if isDamage(err) { // damaged references: counted as damaged, as List counts a damaged header
			r.log.Warn("damaged version manifest", "version", v.ID, "err", err)
			return nil
		}
		if err != nil {
			return err
		}
		return sorter.add(batch)
	})
	if err != nil {
		return nil, err
	}
	st.SparseBytes = sparse.Load()
	marks, err := sorter.finish()
	if err != nil {
		return nil, err
	}
	data, err := r.listData(ctx, "")
	if err != nil {
		return nil, err
	}
	defer data.close()
	var validStored int64
	err = joinMarks(data, marks, nil, func(j *joinRow) error {
		if !j.listed {
			if j.mark.flags&markRef != 0 {
				st.MissingObjects++
			}
			return nil
		}
		st.Objects++
		st.StoredBytes += j.obj.size
		if j.mark.flags&markRef != 0 {
			st.ReferencedObjects++
			st.ReferencedStoredBytes += j.obj.size
		} else {
			st.UnreferencedObjects++
			st.UnreferencedBytes += j.obj.size
		}
		if j.mark.flags&markValid != 0 {
			st.UniqueBytes += int64(j.mark.length)
			validStored += j.obj.size
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if st.UniqueBytes > 0 {
		st.DedupRatio = float64(st.LogicalBytes-st.SparseBytes) / float64(st.UniqueBytes)
	}
	if validStored > 0 {
		st.CompressionRatio = float64(st.UniqueBytes) / float64(validStored)
	}
	segs, err := r.listIndex(ctx)
	if err != nil {
		return nil, err
	}
	st.IndexSegments = len(segs)
	return st, nil
}
