package blockdiff

import (
	"context"
	"fmt"
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
// numbers are a moment's picture.
func (r *Repository) StorageStats(ctx context.Context) (*StorageStats, error) {
	versions, err := r.listFull(ctx, Filter{})
	if err != nil {
		return nil, err
	}
	st := &StorageStats{Versions: len(versions)}
	refs := map[ID]int64{}
	validRefs := map[ID]int64{}
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
		for _, ref := range v.refs {
			switch {
			case ref.Sparse && v.Status == StatusValid:
				st.SparseBytes += ref.Length
			case !ref.Sparse:
				refs[ref.ID] = ref.Length
				if v.Status == StatusValid {
					validRefs[ref.ID] = ref.Length
				}
			}
		}
	}
	found := map[ID]bool{}
	var validStored int64
	for info, err := range r.store.List(ctx, "data/") {
		if err != nil {
			return nil, fmt.Errorf("blockdiff: list data: %w", err)
		}
		id, ok := parseDataKey(info.Key)
		if !ok {
			continue
		}
		found[id] = true
		st.Objects++
		st.StoredBytes += info.Size
		if _, ok := refs[id]; ok {
			st.ReferencedObjects++
			st.ReferencedStoredBytes += info.Size
		} else {
			st.UnreferencedObjects++
			st.UnreferencedBytes += info.Size
		}
		if l, ok := validRefs[id]; ok {
			st.UniqueBytes += l
			validStored += info.Size
		}
	}
	for id := range refs {
		if !found[id] {
			st.MissingObjects++
		}
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
