package blockdiff

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cairn-backup/cairn/objstore"
)

// maxDamage bounds the damage a manifest and a scrub report record per
// version.
const maxDamage = 64

// Problems a scrub finds with an object.
const (
	ProblemMissing = "missing" // the object does not exist
	ProblemSize    = "size"    // it exists with another size than the index records
	ProblemCorrupt = "corrupt" // it does not decode, or its content does not match its ID
)

// Damage is one block of a version that a scrub found missing or corrupt.
type Damage struct {
	Offset  int64  `json:"offset"`  // byte offset of the block in the version
	Length  int64  `json:"length"`  // plaintext length of the block
	Object  string `json:"object"`  // the data object's ID
	Problem string `json:"problem"` // ProblemMissing, ProblemSize or ProblemCorrupt
	Detail  string `json:"detail,omitempty"`
}

// ScrubOptions select what Scrub checks.
type ScrubOptions struct {
	// Deep reads every object, decrypts, decompresses and hashes it; without
	// it, a scrub checks that every object exists with the size the index
	// records.
	Deep bool
	// Versions are the versions to check (any status); All adds every valid
	// version. One of them is required.
	Versions []string
	All      bool
	// Percent checks a random sample of this share of the referenced objects
	// (Benji's -p); 0 and 100 check all of them.
	Percent float64
	// VersionPercent checks, of the versions All selects, a random sample of
	// this share, at least one (Benji's batch-scrub -P); 0 and 100 check all
	// of them. Versions named in Versions are always checked.
	VersionPercent float64
	// Progress, when set, is called (from several goroutines) with the
	// objects checked so far and their number.
	Progress func(done, total int64)
	// TempDir is the local directory of the sorted runs of referenced
	// objects (CleanupOptions.TempDir); "" means os.TempDir().
	TempDir string
}

// ScrubFailure is a damaged block of one version in a ScrubReport.
type ScrubFailure struct {
	Version string `json:"version"`
	Volume  string `json:"volume"`
	Damage
}

// ScrubReport is the result of Scrub.
type ScrubReport struct {
	Deep            bool    `json:"deep"`
	Percent         float64 `json:"percent"`
	VersionPercent  float64 `json:"version_percent"`
	VersionsChecked int     `json:"versions_checked"`
	ObjectsChecked  int     `json:"objects_checked"`
	BytesChecked    int64   `json:"bytes_checked"` // stored bytes of the objects checked
	// Failures are the damaged blocks of every version that references a
	// damaged object, checked or not (at most maxDamage a version).
	Failures []ScrubFailure `json:"failures"`
	// Marked are the versions this scrub marked invalid: the damaged ones
	// and every other version sharing a damaged object.
	Marked []string `json:"marked_invalid"`
	// Invalid are the checked versions that are not valid now (marked by
	// this scrub, or invalid or incomplete before).
	Invalid []string `json:"invalid"`
	// IndexRepaired says the damaged objects were dropped from the index,
	// so that new backups store those blocks again instead of referencing
	// them. False when there was nothing to repair or the exclusive lock
	// was not available (cleanup drops them later).
	IndexRepaired bool `json:"index_repaired"`
	// DamagedVersions are the version manifests that cannot be read (List's
	// StatusDamaged): remove them, or put back a good copy.
	DamagedVersions []string `json:"damaged_versions"`
	// DamagedSegments are the index segments that cannot be read: backups
	// treat them as absent; cleanup or repair index replaces them.
	DamagedSegments []string `json:"damaged_index_segments"`
	Duration        float64  `json:"duration_seconds"`
}

// OK reports whether every checked version is valid and nothing was damaged.
func (s *ScrubReport) OK() bool {
	return len(s.Failures) == 0 && len(s.Invalid) == 0 && len(s.Marked) == 0 &&
		len(s.DamagedVersions) == 0 && len(s.DamagedSegments) == 0
}

// Scrub checks the objects that versions reference (every one exists with
// the expected size; with Deep, every one decodes and hashes to its ID). A
// version referencing a missing or corrupt object is marked invalid, and so
// is every other version sharing that object; the damaged objects are then
// dropped from the index so that the next backup meeting those blocks stores
// them again (which repairs a corrupt object in place). Transient store
// errors fail the scrub without marking anything. Scrub holds a shared lock
// while it checks, so that no cleanup runs meanwhile.
func (r *Repository) Scrub(ctx context.Context, opts ScrubOptions) (*ScrubReport, error) {
	start := time.Now()
	if opts.Percent < 0 || opts.Percent > 100 {
		return nil, fmt.Errorf("blockdiff: scrub: percent %v out of 0..100", opts.Percent)
	}
	if opts.VersionPercent < 0 || opts.VersionPercent > 100 {
		return nil, fmt.Errorf("blockdiff: scrub: version percent %v out of 0..100", opts.VersionPercent)
	}
	if !opts.All && len(opts.Versions) == 0 {
		return nil, errors.New("blockdiff: scrub: name versions or ask for all")
	}
	op := "scrub"
	if opts.Deep {
		op = "deep-scrub"
	}
	lock, err := r.Lock(ctx, LockShared, op)
	if err != nil {
		return nil, err
	}
	defer lock.Release(ctx)
	vs, damagedVersions, err := r.scrubSelect(ctx, opts)
	if err != nil {
		return nil, err
	}
	rep := &ScrubReport{Deep: opts.Deep, Percent: opts.Percent, VersionPercent: opts.VersionPercent, VersionsChecked: len(vs), Failures: []ScrubFailure{},
		Marked: []string{}, Invalid: []string{}, DamagedVersions: damagedVersions, DamagedSegments: []string{}}
	// Mark the objects the versions reference, in sorted runs on local
	// disk (mark.go), then check them in ID order against the index and,
	// for a light scrub of many objects, the listing of data/.
	sorter := newMarkSorter(opts.TempDir)
	defer sorter.close()
	var dmu sync.Mutex
	err = r.markVersionsFunc(ctx, vs, sorter, nil, func(v *Version, err error) {
		dmu.Lock()
		defer dmu.Unlock()
		rep.DamagedVersions = append(rep.DamagedVersions, v.ID)
		r.log.Error("damaged version manifest", "version", v.ID, "err", err)
	})
	if err != nil {
		return nil, fmt.Errorf("blockdiff: %s: %w", op, err)
	}
	slices.Sort(rep.DamagedVersions)
	open, n, err := sorter.materialize()
	if err != nil {
		return nil, fmt.Errorf("blockdiff: %s: %w", op, err)
	}
	k := n
	if opts.Percent > 0 && opts.Percent < 100 && n > 0 {
		k = max(int64(float64(n)*opts.Percent/100+0.5), 1)
	}
	scan, err := r.scanIndex(ctx)
	if err != nil {
		return nil, fmt.Errorf("blockdiff: %s: %w", op, err)
	}
	src, err := open()
	if err != nil {
		return nil, fmt.Errorf("blockdiff: %s: %w", op, err)
	}
	idx, err := r.sortedIndex(ctx, scan, opts.TempDir)
	if err != nil {
		return nil, fmt.Errorf("blockdiff: %s: %w", op, err)
	}
	defer idx.stop()
	bad, checkedBytes, err := r.checkObjects(ctx, &sampleSource{src: src, n: n, k: k}, k, idx.next, opts)
	if err != nil {
		return nil, fmt.Errorf("blockdiff: %s: %w", op, err)
	}
	if damaged := idx.damaged(); len(damaged) > 0 {
		rep.DamagedSegments = damaged
		r.log.Error("damaged index objects (backups treat them as absent; run cleanup or repair index)", "objects", damaged)
	}
	idx.stop()
	sorter.close()
	rep.ObjectsChecked, rep.BytesChecked = int(k), checkedBytes
	if len(bad) > 0 {
		if err := r.markDamaged(ctx, bad, rep, op); err != nil {
			return rep, err
		}
	}
	for _, v := range vs {
		if slices.Contains(rep.Marked, v.ID) || v.Status != StatusValid {
			rep.Invalid = append(rep.Invalid, v.ID)
		}
	}
	if err := lock.Release(ctx); err != nil {
		r.log.Warn("could not release the scrub lock", "err", err)
	}
	if len(bad) > 0 {
		if err := r.dropFromIndex(ctx, bad, opts.TempDir); err != nil {
			r.log.Warn("damaged objects are still in the index (cleanup will drop them)", "err", err)
		} else {
			rep.IndexRepaired = true
		}
	}
	rep.Duration = time.Since(start).Seconds()
	r.log.Info(op+" done", "versions", rep.VersionsChecked, "objects", rep.ObjectsChecked, "bytes", rep.BytesChecked,
		"damaged_objects", len(bad), "marked_invalid", len(rep.Marked))
	return rep, nil
}

// scrubSelect reads the versions a scrub checks: the named ones (any status)
// and, with All, every valid one. Damaged manifests (every one with All, the
// named ones otherwise) are returned apart, by ID.
func (r *Repository) scrubSelect(ctx context.Context, opts ScrubOptions) ([]*Version, []string, error) {
	var vs []*Version
	damaged := []string{}
	seen := map[string]bool{}
	if opts.All {
		all, err := r.List(ctx, Filter{})
		if err != nil {
			return nil, nil, err
		}
		for _, v := range all {
			switch v.Status {
			case StatusValid:
				vs = append(vs, v)
			case StatusDamaged:
				damaged = append(damaged, v.ID)
				seen[v.ID] = true
				r.log.Error("damaged version manifest", "version", v.ID, "err", v.Error)
			}
		}
		vs = sample(vs, opts.VersionPercent)
		slices.SortFunc(vs, func(a, b *Version) int { // back to List's order
			return cmp.Or(a.Created.Compare(b.Created), strings.Compare(a.ID, b.ID))
		})
		for _, v := range vs {
			seen[v.ID] = true
		}
	}
	for _, id := range opts.Versions {
		if seen[id] {
			continue
		}
		v, err := r.versionHeader(ctx, id)
		if isDamage(err) {
			seen[id] = true
			damaged = append(damaged, id)
			r.log.Error("damaged version manifest", "version", id, "err", err)
			continue
		}
		if err != nil {
			return nil, nil, err
		}
		seen[id] = true
		vs = append(vs, v)
	}
	return vs, damaged, nil
}

// sample keeps a random pct percent of s (at least one), or all of it for 0
// and 100. It reorders s.
func sample[T any](s []T, pct float64) []T {
	if pct <= 0 || pct >= 100 || len(s) == 0 {
		return s
	}
	k := max(int(float64(len(s))*pct/100+0.5), 1)
	mrand.Shuffle(len(s), func(i, j int) { s[i], s[j] = s[j], s[i] })
	return s[:k]
}

// damage is what is wrong with one object.
type damage struct {
	problem, detail string
}

// checkObjects checks the k objects of src (in ID order) against the index
// idxNext (sortedIndex's, in ID order) and returns the damaged ones. Errors other than a missing or undecodable object abort the
// check: they say nothing about the object. A light check of more than
// 1,000 objects merge-joins them with one listing of data/; fewer are
// Stat'ed one by one. Sizes are checked against the index's entries, read
// in ID order alongside.
func (r *Repository) checkObjects(ctx context.Context, src markSource, k int64, idxNext func() (indexEntry, error, bool), opts ScrubOptions) (map[ID]damage, int64, error) {
	var mu sync.Mutex
	bad := map[ID]damage{}
	var bytes, done atomic.Int64
	report := func(id ID, size int64, d *damage) {
		bytes.Add(size)
		if d != nil {
			mu.Lock()
			bad[id] = *d
			mu.Unlock()
			r.log.Error("damaged object", "object", id.String(), "problem", d.problem, "detail", d.detail)
		}
		if n := done.Add(1); opts.Progress != nil {
			opts.Progress(n, k)
		}
	}
	if !opts.Deep && k > scrubListThreshold {
		data, err := r.listData(ctx, opts.TempDir)
		if err != nil {
			return nil, 0, err
		}
		defer data.close()
		err = joinMarks(data, src, idxNext, func(j *joinRow) error {
			if j.mark.flags == 0 {
				return nil // listed or indexed, not checked
			}
			if !j.listed {
				report(j.id, 0, &damage{problem: ProblemMissing})
				return nil
			}
			report(j.id, j.obj.size, sizeDamage(j.obj.size, j.inIndex, j.idx))
			return nil
		})
		return bad, bytes.Load(), err
	}
	// One batch of objects at a time, checked in parallel.
	type item struct {
		m       markRec
		inIndex bool
		idx     indexEntry
	}
	batch := make([]item, 0, 1024)
	bufs := make(chan *[2][]byte, r.opts.Transfers)
	for range cap(bufs) {
		bufs <- &[2][]byte{}
	}
	flush := func() error {
		err := r.parallel(ctx, len(batch), func(ctx context.Context, i int) error {
			it := batch[i]
			var d *damage
			var size int64
			var err error
			if opts.Deep {
				b := <-bufs
				size, d, err = r.deepCheck(ctx, it.m.id, int64(it.m.length), b)
				bufs <- b
			} else {
				size, d, err = r.statCheck(ctx, it.m.id, it.inIndex, it.idx)
			}
			if err != nil {
				return err
			}
			report(it.m.id, size, d)
			return nil
		})
		batch = batch[:0]
		return err
	}
	err := joinMarks(emptyData{}, src, idxNext, func(j *joinRow) error {
		if j.mark.flags == 0 {
			return nil
		}
		batch = append(batch, item{j.mark, j.inIndex, j.idx})
		if len(batch) == cap(batch) {
			return flush()
		}
		return nil
	})
	if err == nil {
		err = flush()
	}
	return bad, bytes.Load(), err
}

// scrubListThreshold is the number of objects above which a light scrub
// lists data/ rather than Stat each object. (A variable for tests.)
var scrubListThreshold int64 = 1000

// emptyData is a listing with no object.
type emptyData struct{}

func (emptyData) next() (dataObj, bool, error) { return dataObj{}, false, nil }

// sizeDamage checks an object's stored size against its index entry (any
// size up to the largest object when no index object lists it).
func sizeDamage(size int64, inIndex bool, e indexEntry) *damage {
	if inIndex && e.Stored != size {
		return &damage{problem: ProblemSize, detail: fmt.Sprintf("%d bytes stored, the index records %d", size, e.Stored)}
	}
	if size < 1 || size > MaxBlockSize*4+1024 {
		return &damage{problem: ProblemSize, detail: fmt.Sprintf("%d bytes stored", size)}
	}
	return nil
}

// statCheck checks that an object exists with the stored size the index
// records.
func (r *Repository) statCheck(ctx context.Context, id ID, inIndex bool, e indexEntry) (int64, *damage, error) {
	info, err := r.store.Stat(ctx, dataKey(id))
	if errors.Is(err, objstore.ErrNotExist) {
		return 0, &damage{problem: ProblemMissing}, nil
	}
	if err != nil {
		return 0, nil, fmt.Errorf("stat %s: %w", dataKey(id), err)
	}
	return info.Size, sizeDamage(info.Size, inIndex, e), nil
}

// sampleSource yields k of the n records of src, each k-subset as likely
// as any other (selection sampling, Knuth's algorithm S).
type sampleSource struct {
	src        markSource
	n, k, seen int64
	taken      int64
}

func (s *sampleSource) next() (markRec, bool, error) {
	for s.taken < s.k {
		m, ok, err := s.src.next()
		if err != nil || !ok {
			return m, ok, err
		}
		s.seen++
		if s.k >= s.n || mrand.Int64N(s.n-s.seen+1) < s.k-s.taken {
			s.taken++
			return m, true, nil
		}
	}
	return markRec{}, false, nil
}

// deepCheck reads, decodes and hashes an object; b holds reusable buffers.
func (r *Repository) deepCheck(ctx context.Context, id ID, length int64, b *[2][]byte) (int64, *damage, error) {
	key := dataKey(id)
	body, err := r.readInto(ctx, key, b[0], MaxBlockSize*4+1024)
	switch {
	case errors.Is(err, objstore.ErrNotExist):
		return 0, &damage{problem: ProblemMissing}, nil
	case errors.Is(err, ErrCorrupt):
		return 0, &damage{problem: ProblemSize, detail: err.Error()}, nil
	case err != nil:
		return 0, nil, err
	}
	b[0] = body
	size := int64(len(body))
	plain, err := r.codec.open(key, body, b[1], false)
	if err != nil {
		if errors.Is(err, ErrCorrupt) || errors.Is(err, ErrUnsupportedFormat) {
			return size, &damage{problem: ProblemCorrupt, detail: err.Error()}, nil
		}
		return size, nil, err
	}
	b[1] = plain
	if int64(len(plain)) != length {
		return size, &damage{problem: ProblemCorrupt, detail: fmt.Sprintf("%d bytes decoded, %d referenced", len(plain), length)}, nil
	}
	if r.codec.hash(plain) != id {
		return size, &damage{problem: ProblemCorrupt, detail: "content does not match its ID"}, nil
	}
	return size, nil, nil
}

// parseDataKey returns the ID of a data object key, or false for any other key.
func parseDataKey(key string) (ID, bool) {
	rest, ok := strings.CutPrefix(key, "data/")
	if !ok || len(rest) != 3+64 || rest[2] != '/' || rest[:2] != rest[3:5] {
		return ID{}, false
	}
	id, err := ParseID(rest[3:])
	return id, err == nil
}

// markDamaged marks every version that references a damaged object invalid,
// recording where, and fills the report. Each manifest's references are
// streamed (Transfers at a time) against the damaged objects, which are
// few; only the versions that reference one are rewritten.
func (r *Repository) markDamaged(ctx context.Context, bad map[ID]damage, rep *ScrubReport, op string) error {
	all, err := r.List(ctx, Filter{})
	if err != nil {
		return err
	}
	found := make([][]Damage, len(all))
	err = r.parallel(ctx, len(all), func(ctx context.Context, i int) error {
		v := all[i]
		if v.Status == StatusDamaged {
			return nil
		}
		var ds []Damage
		var off int64
		_, err := r.scanVersion(ctx, v.ID, nil, func(ref Ref) error {
			if d, ok := bad[ref.ID]; ok && !ref.Sparse && len(ds) < maxDamage {
				ds = append(ds, Damage{Offset: off, Length: ref.Length, Object: ref.ID.String(), Problem: d.problem, Detail: d.detail})
			}
			off += ref.Length
			return nil
		})
		switch {
		case errors.Is(err, ErrVersionNotFound):
			return nil // removed meanwhile
		case isDamage(err):
			r.log.Error("damaged version manifest: cannot tell which damaged objects it references", "version", v.ID, "err", err)
			return nil
		case err != nil:
			return err
		}
		found[i] = ds
		return nil
	})
	if err != nil {
		return err
	}
	for i, v := range all {
		ds := found[i]
		if len(ds) == 0 {
			continue
		}
		for _, d := range ds {
			rep.Failures = append(rep.Failures, ScrubFailure{Version: v.ID, Volume: v.Volume, Damage: d})
		}
		if v.Status == StatusInvalid {
			continue
		}
		_, err := r.updateFull(ctx, v.ID, func(v *Version) error {
			ds := damagedBlocks(v, bad) // of the manifest as it is now
			v.Status, v.Damage = StatusInvalid, ds
			v.Error = fmt.Sprintf("%s %s: %d damaged blocks, first at offset %d (object %s %s)",
				op, time.Now().UTC().Format(time.RFC3339), len(ds), ds[0].Offset, ds[0].Object, ds[0].Problem)
			return nil
		})
		if errors.Is(err, ErrVersionNotFound) {
			continue // removed meanwhile
		}
		if err != nil {
			return fmt.Errorf("blockdiff: mark %s invalid: %w", v.ID, err)
		}
		rep.Marked = append(rep.Marked, v.ID)
		r.log.Error("version marked invalid", "version", v.ID, "volume", v.Volume, "damaged_blocks", len(ds))
	}
	return nil
}

// damagedBlocks lists the blocks of v that reference bad objects (at most
// maxDamage).
func damagedBlocks(v *Version, bad map[ID]damage) []Damage {
	var out []Damage
	var off int64
	for _, ref := range v.refs {
		if d, ok := bad[ref.ID]; ok && !ref.Sparse && len(out) < maxDamage {
			out = append(out, Damage{Offset: off, Length: ref.Length, Object: ref.ID.String(), Problem: d.problem, Detail: d.detail})
		}
		off += ref.Length
	}
	return out
}

// dropFromIndex rewrites, under the exclusive lock, every index segment that
// lists a bad object without it (new segment first, then the old one goes);
// an index with compacted generations is compacted again without them (its
// segments through sorted runs in tmp, as cleanup reads them).
func (r *Repository) dropFromIndex(ctx context.Context, bad map[ID]damage, tmp string) error {
	lock, err := r.lock(ctx, LockExclusive, "scrub: index repair", min(r.opts.LockWait, time.Minute))
	if err != nil {
		return err
	}
	defer lock.Release(ctx)
	scan, err := r.scanIndex(ctx)
	if err != nil {
		return err
	}
	if scan.Generations > 0 {
		// A compacted generation cannot lose one entry: the index is
		// compacted again without the damaged objects (streamed in ID
		// order, as cleanup does), then the old index objects go.
		idx, err := r.sortedIndex(ctx, scan, tmp)
		if err != nil {
			return err
		}
		defer idx.stop()
		kept := func(yield func(indexEntry, error) bool) {
			for {
				e, err, ok := idx.next()
				if !ok && err == nil {
					return
				}
				if err == nil {
					if _, ok := bad[e.ID]; ok {
						continue
					}
				}
				if !yield(e, err) || err != nil {
					return
				}
			}
		}
		if _, err := r.writeCompactedIndex(ctx, kept, compactOptions{Check: lock.Check}); err != nil {
			return err
		}
		return r.deleteIndexKeys(ctx, scan.Keys, lock.Check)
	}
	keys := scan.segs
	rewrite := map[string][]indexEntry{}
	_, _, err = r.readSegments(ctx, keys, func(key string, entries []indexEntry) {
		var keep []indexEntry
		hit := false
		for _, e := range entries {
			if _, ok := bad[e.ID]; ok {
				hit = true
			} else {
				keep = append(keep, e)
			}
		}
		if hit {
			rewrite[key] = keep
		}
	})
	if err != nil {
		return err
	}
	for key, keep := range rewrite {
		if err := lock.Check(); err != nil {
			return err
		}
		if err := r.putSegments(ctx, keep); err != nil {
			return err
		}
		if err := r.store.Delete(ctx, key); err != nil {
			return fmt.Errorf("blockdiff: delete index segment %s: %w", key, err)
		}
	}
	return nil
}

// maxSegmentEntries bounds the entries of one segment written by cleanup, so
// that a segment stays far below the decoder's size bound.
const maxSegmentEntries = 1 << 20

// putSegments writes entries as new index segments and returns once all are
// stored.
func (r *Repository) putSegments(ctx context.Context, entries []indexEntry) error {
	for len(entries) > 0 {
		n := min(len(entries), maxSegmentEntries)
		name := make([]byte, 16)
		_, _ = rand.Read(name)
		if err := r.putMeta(ctx, "index/"+hex.EncodeToString(name), encodeIndex(entries[:n])); err != nil {
			return err
		}
		entries = entries[n:]
	}
	return nil
}
