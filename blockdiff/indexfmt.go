package blockdiff

// The index of format version 3 (FORMAT.md, "Index"): besides the
// uncompacted segments that backups write (index/<32 hex>, the version-1
// encoding, unsorted), a compaction writes one generation:
//
//	index/c-<gen>-<seq>   packs: sorted index frames, each frame sealed on its own
//	                      (an envelope per frame, so one ranged Get is verified alone)
//	index/c-<gen>         the directory, written last: the first ID, offset, length
//	                      and entry count of every frame of every pack, and a Bloom
//	                      filter per pack
//
// Backups keep only the uncompacted segments in memory; a lookup in a
// generation checks the pack's filter, then reads one frame (through the local
// cache of frames, cache.go).
//
// This file holds the API that cleanup, scrub and repair use: scanIndex and
// its sorted iterator, writeCompactedIndex and deleteIndexKeys.

import (
	"context"
	"errors"
	"iter"
)

// indexScan is one consistent view of index/: the keys of one listing and
// how to read them. Entries reads them in ID order.
type indexScan struct {
	r *Repository
	// Keys are every key under index/ of a form this package knows:
	// uncompacted segments, compacted directories and their packs
	// (including orphan packs of a compaction that died before its
	// directory). A compaction that replaces the index deletes exactly
	// these (deleteIndexKeys). Keys of unknown forms are never included.
	Keys []string
	// Damaged are the segments and directories found damaged so far (they
	// do not decode or authenticate; treated as absent). Complete only once
	// Entries has been iterated to its end without error; damaged frames of
	// a generation are reported as their pack's key.
	Damaged []string
	// Segments and Generations count the uncompacted segments and the
	// compacted generations (directories) of the listing.
	Segments, Generations int
}

// scanIndex lists index/ once and returns the view of it. Nothing is read
// yet but the listing.
func (r *Repository) scanIndex(ctx context.Context) (*indexScan, error) {
	return nil, errors.New("blockdiff: scanIndex: not implemented yet")
}

// Entries returns the entries of every index object of the scan in strictly
// ascending ID order, each ID once (when several objects list an ID, the
// entry of the newest form wins: an uncompacted segment's over a
// generation's). Memory: the uncompacted segments are read whole, merged and
// sorted in memory (they hold what was written since the last compaction;
// in a format 1/2 repository that is the whole index, once, until a cleanup
// compacts it); the generations are read one pack at a time. Damaged objects
// are skipped and recorded in s.Damaged; errors of the store end the
// iteration with the error (the entry is then zero).
func (s *indexScan) Entries(ctx context.Context) iter.Seq2[indexEntry, error] {
	return func(yield func(indexEntry, error) bool) {
		yield(indexEntry{}, errors.New("blockdiff: index entries: not implemented yet"))
	}
}

// compactOptions tune writeCompactedIndex.
type compactOptions struct {
	// Check, when set, is called before each object is written (a lock's
	// Check); an error stops the compaction before that write.
	Check func() error
}

// compactResult says what writeCompactedIndex wrote.
type compactResult struct {
	Keys    []string // the packs, then the directory: the new generation
	Entries int64    // entries written
	Packs   int
}

// writeCompactedIndex writes entries as a new compacted generation of the
// index: packs of sorted frames first, the directory (with the packs'
// filters) last, so that a generation without its directory is never read.
// entries must be strictly ascending by ID (an out-of-order or repeated ID
// is an error, nothing committed); an error from the iterator stops the
// write. Memory: one pack (2^18 entries, about 10 MiB) plus the filters (10
// bits an entry) and the frame directory (about 45 bytes per 1,024 entries).
// An empty entries writes an empty generation (a directory with no pack),
// which still replaces the old index. Before the first write, the config is
// upgraded to format version 3 (upgradeFormat); the old keys are the
// caller's to delete afterwards (deleteIndexKeys), under the same lock.
func (r *Repository) writeCompactedIndex(ctx context.Context, entries iter.Seq2[indexEntry, error], opts compactOptions) (*compactResult, error) {
	return nil, errors.New("blockdiff: writeCompactedIndex: not implemented yet")
}

// deleteIndexKeys deletes the keys of an index that a compaction replaced:
// directories first (a generation without its directory is never read),
// then packs and segments. A key already gone is not an error. check, when
// set, is called before each deletion.
func (r *Repository) deleteIndexKeys(ctx context.Context, keys []string, check func() error) error {
	return errors.New("blockdiff: deleteIndexKeys: not implemented yet")
}

// upgradeFormat raises the config's format version to v (3: compacted index
// generations, manifests with headers) before the first object that needs it
// is written, so that older readers refuse the repository rather than
// misread it; an encrypted config gets its MAC again. It does nothing when
// the config is already at v or above. Unlike upgradeConfig it is not best
// effort: a failure must stop the write that needs the new version.
func (r *Repository) upgradeFormat(ctx context.Context, v int) error {
	return errors.New("blockdiff: upgradeFormat: not implemented yet")
}
