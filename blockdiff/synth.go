package blockdiff

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"lukechampine.com/blake3"
)

// SynthOptions describe a synthetic repository for benchmarks of scale
// (bench/README.md, "Repositories at scale"). Synthesize writes its index
// and manifests through the format's own encoders, without the data of most
// blocks: every block but those of the image is a placeholder data object
// (an empty plaintext sealed as data objects are, a byte or 29 bytes)
// standing for a BlockSize block.
type SynthOptions struct {
	// Blocks is the number of distinct data objects (index entries), the
	// image's included.
	Blocks int64
	// Versions is the number of manifests (at least Volumes+1): the last is
	// a version of volume "img" whose blocks are real (ImageBlocks).
	Versions int
	// Volumes spreads the other versions over vol-0..vol-(Volumes-1)
	// (default 10); each has RefsPerVersion references (default 32,768,
	// fewer when Blocks is too small), the first version of a volume all
	// new blocks, the next ones the previous with a share replaced by new
	// blocks, so that all Blocks are referenced.
	Volumes, RefsPerVersion int
	// ImageBlocks are the real blocks (of the repository's block size) of
	// the image version, drawn from ImageSeed (SynthImage); default 16.
	ImageBlocks int
	ImageSeed   uint64
	// Uncompacted writes the index as uncompacted segments of 2^20
	// entries, as backups of format 1 and 2 left it, instead of one
	// compacted generation.
	Uncompacted bool
	// DataEvery writes a placeholder data object for every DataEvery-th
	// block only (0 or 1: all): a file system may not have an inode for
	// each of 26.2M objects. Missing ones are listed in the index all the
	// same (a scrub reports them; a cleanup drops them from the index).
	DataEvery int64
	// DataDir, when set, is the file system directory of the store's data/
	// prefix (a file:// repository's <path>/data): placeholders are written
	// there directly, without the backend's fsync of every object, which
	// at millions of objects takes hours. Otherwise they go through the
	// store.
	DataDir string
	// Now is the creation time of the newest version (default: now);
	// versions are an hour apart.
	Now time.Time
	// Progress, when set, is told what is being written.
	Progress func(what string, done, total int64)
}

// SynthResult says what Synthesize wrote.
type SynthResult struct {
	Entries      int64  // index entries
	DataObjects  int64  // data objects written (placeholders and the image's)
	Versions     int    // manifests
	ImageVersion string // the version of volume "img" (a base for differential backups)
	IndexKeys    int    // index objects
}

// SynthImage returns the image of n blocks of bs bytes that Synthesize
// stores for seed: text-like (compressible) and random blocks alternating.
func SynthImage(seed uint64, n, bs int) []byte {
	img := make([]byte, n*bs)
	rng := rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8), byte(seed >> 16), 0x17})
	words := []string{"backup ", "volume ", "cairn ", "block ", "\n", "42 ", "restore "}
	for i := range n {
		b := img[i*bs : (i+1)*bs]
		if i%2 == 0 {
			_, _ = rng.Read(b)
			continue
		}
		for p := 0; p < len(b); {
			p += copy(b[p:], words[rng.Uint64()%uint64(len(words))])
		}
	}
	return img
}

// synthID is the ID of synthetic block i of n: its first 8 bytes grow with i
// (spread evenly over the ID space, so that the index is written in i order
// without sorting), the other 24 are a hash of i (uniform, as the filter
// needs).
func synthID(i, n uint64) ID {
	var id ID
	step := ^uint64(0) / max(n, 1)
	binary.BigEndian.PutUint64(id[:8], i*step)
	var seed [8]byte
	binary.LittleEndian.PutUint64(seed[:], i)
	h := blake3.Sum256(seed[:])
	copy(id[8:], h[:24])
	return id
}

// Synthesize writes a synthetic repository of opts.Blocks blocks and
// opts.Versions versions into r, which must be empty (just initialised). It
// is for benchmarks: the placeholder objects do not restore.
func Synthesize(ctx context.Context, r *Repository, opts SynthOptions) (*SynthResult, error) {
	if opts.Volumes <= 0 {
		opts.Volumes = 10
	}
	if opts.RefsPerVersion <= 0 {
		opts.RefsPerVersion = 32768
	}
	if opts.ImageBlocks <= 0 {
		opts.ImageBlocks = 16
	}
	if opts.DataEvery <= 0 {
		opts.DataEvery = 1
	}
	if opts.Now.IsZero() {
		opts.Now = time.Now()
	}
	progress := func(what string, done, total int64) {
		if opts.Progress != nil {
			opts.Progress(what, done, total)
		}
	}
	bs := r.cfg.BlockSize
	nSynth := opts.Blocks - int64(opts.ImageBlocks)
	if nSynth < int64(opts.Volumes) || opts.Versions < opts.Volumes+1 || nSynth > 1<<32 {
		return nil, fmt.Errorf("blockdiff: synthesize: %d blocks and %d versions over %d volumes: want more blocks than volumes + %d image blocks, at most 2^32, and more versions than volumes",
			opts.Blocks, opts.Versions, opts.Volumes, opts.ImageBlocks)
	}
	R := int64(opts.RefsPerVersion)
	if R*int64(opts.Volumes) > nSynth {
		R = nSynth / int64(opts.Volumes)
	}
	res := &SynthResult{}

	// The image's blocks: real objects.
	img := SynthImage(opts.ImageSeed, opts.ImageBlocks, bs)
	var real []indexEntry
	imgV := &Version{Volume: "img", Kind: KindBlock, Size: int64(len(img)), BlockSize: bs, Status: StatusValid, Labels: map[string]string{}}
	for i := range opts.ImageBlocks {
		p := img[i*bs : (i+1)*bs]
		id := r.codec.hash(p)
		body := r.codec.seal(nil, dataKey(id), p, true)
		if err := r.store.Put(ctx, dataKey(id), bytes.NewReader(body), int64(len(body))); err != nil {
			return nil, fmt.Errorf("blockdiff: synthesize: %w", err)
		}
		imgV.refs = append(imgV.refs, Ref{ID: id, Length: int64(bs)})
		if !slices.ContainsFunc(real, func(e indexEntry) bool { return e.ID == id }) {
			real = append(real, indexEntry{ID: id, Stored: int64(len(body)), Length: int64(bs)})
		}
	}
	res.DataObjects += int64(len(real))
	slices.SortFunc(real, func(a, b indexEntry) int { return compareID(a.ID, b.ID) })

	// Placeholders: one sealed empty plaintext per data object.
	n := uint64(nSynth)
	phSize := int64(len(r.codec.seal(nil, dataKey(ID{}), nil, false)))
	if err := synthData(ctx, r, n, opts, &res.DataObjects, progress); err != nil {
		return nil, err
	}

	// The index.
	all := func(yield func(indexEntry, error) bool) {
		k := 0
		for i := range n {
			e := indexEntry{ID: synthID(i, n), Stored: phSize, Length: int64(bs)}
			for k < len(real) && compareID(real[k].ID, e.ID) < 0 {
				if !yield(real[k], nil) {
					return
				}
				k++
			}
			if i%(1<<20) == 0 {
				progress("index", int64(i), int64(n))
			}
			if !yield(e, nil) {
				return
			}
		}
		for ; k < len(real); k++ {
			if !yield(real[k], nil) {
				return
			}
		}
	}
	if opts.Uncompacted {
		var seg []indexEntry
		flush := func() error {
			name := make([]byte, 16)
			binary.BigEndian.PutUint64(name, uint64(res.IndexKeys))
			copy(name[8:], blake3Sum(name[:8])[:8])
			if err := r.putMeta(ctx, "index/"+hex.EncodeToString(name), encodeIndex(seg)); err != nil {
				return err
			}
			res.IndexKeys++
			seg = seg[:0]
			return nil
		}
		for e := range all {
			seg = append(seg, e)
			res.Entries++
			if len(seg) == maxSegmentEntries {
				if err := flush(); err != nil {
					return nil, err
				}
			}
		}
		if len(seg) > 0 {
			if err := flush(); err != nil {
				return nil, err
			}
		}
	} else {
		cr, err := r.writeCompactedIndex(ctx, all, compactOptions{})
		if err != nil {
			return nil, err
		}
		res.Entries, res.IndexKeys = cr.Entries, len(cr.Keys)
	}

	// The manifests: a rolling set of references per volume.
	V := opts.Versions - 1
	vols := int64(opts.Volumes)
	churn := int64(0)
	if rest := int64(V) - vols; rest > 0 {
		churn = min(R, (nSynth-vols*R+rest-1)/rest)
	}
	cur := make([][]uint32, vols)
	fresh := uint64(0)
	for k := range V {
		vol := int64(k) % vols
		if cur[vol] == nil {
			cur[vol] = make([]uint32, R)
			for p := range cur[vol] {
				cur[vol][p] = uint32(fresh)
				fresh++
			}
		} else {
			gen := int64(k) / vols
			for j := range churn {
				if fresh >= n {
					break
				}
				cur[vol][(gen*churn+j)%R] = uint32(fresh)
				fresh++
			}
		}
		created := opts.Now.Add(-time.Duration(V-k) * time.Hour).UTC()
		v := &Version{ID: newVersionID(created), Volume: fmt.Sprintf("vol-%d", vol), Kind: KindBlock,
			Size: R * int64(bs), BlockSize: bs, Created: created, Labels: map[string]string{"synthetic": "true"},
			Status: StatusValid, refs: make([]Ref, R)}
		for p, i := range cur[vol] {
			v.refs[p] = Ref{ID: synthID(uint64(i), n), Length: int64(bs)}
		}
		v.Stats.BlocksTotal = R
		if err := r.putVersion(ctx, v); err != nil {
			return nil, err
		}
		res.Versions++
		progress("versions", int64(k+1), int64(opts.Versions))
	}
	imgV.Created = opts.Now.UTC()
	imgV.ID = newVersionID(imgV.Created)
	imgV.Stats.BlocksTotal = int64(len(imgV.refs))
	if err := r.putVersion(ctx, imgV); err != nil {
		return nil, err
	}
	res.Versions++
	res.ImageVersion = imgV.ID
	return res, nil
}

func blake3Sum(b []byte) []byte {
	h := blake3.Sum256(b)
	return h[:]
}

// synthData writes the placeholder data objects, on two goroutines.
func synthData(ctx context.Context, r *Repository, n uint64, opts SynthOptions, count *int64, progress func(string, int64, int64)) error {
	if opts.DataDir != "" {
		for x := range 256 {
			if err := os.MkdirAll(filepath.Join(opts.DataDir, fmt.Sprintf("%02x", x)), 0o755); err != nil {
				return fmt.Errorf("blockdiff: synthesize: %w", err)
			}
		}
	}
	const workers = 2
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	every := uint64(opts.DataEvery)
	for w := range uint64(workers) {
		wg.Go(func() {
			var written int64
			for i := w * every; i < n; i += workers * every {
				if ctx.Err() != nil {
					break
				}
				id := synthID(i, n)
				key := dataKey(id)
				body := r.codec.seal(nil, key, nil, false)
				var err error
				if opts.DataDir != "" {
					h := id.String()
					err = os.WriteFile(filepath.Join(opts.DataDir, h[:2], h), body, 0o644)
				} else {
					err = r.store.Put(ctx, key, bytes.NewReader(body), int64(len(body)))
				}
				if err != nil {
					mu.Lock()
					firstErr = cmpOr(firstErr, fmt.Errorf("blockdiff: synthesize: data object %s: %w", key, err))
					mu.Unlock()
					return
				}
				written++
				if w == 0 && written%(1<<18) == 0 {
					progress("data", int64(i), int64(n))
				}
			}
			mu.Lock()
			*count += written
			mu.Unlock()
		})
	}
	wg.Wait()
	if firstErr == nil && ctx.Err() != nil {
		firstErr = context.Cause(ctx)
	}
	return firstErr
}

func cmpOr(a, b error) error {
	if a != nil {
		return a
	}
	return b
}
