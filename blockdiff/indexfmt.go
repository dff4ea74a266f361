package blockdiff

// The index of format version 3 (FORMAT.md, "Index segments"): besides the
// uncompacted segments that backups write (index/<32 hex>, the version-1
// encoding, unsorted), a compaction writes one generation:
//
//	index/c-<gen>-<seq>   packs: sorted index frames, each frame sealed on its own
//	                      (an envelope per frame, so one ranged Get is verified
//	                      alone), then the pack's Bloom filter, sealed the same way
//	index/c-<gen>         the directory, written last: the first ID, length and
//	                      entry count of every frame of every pack, and where each
//	                      pack's filter is
//
// Backups keep only the uncompacted segments and the directories in memory; a
// lookup in a generation reads the filter of the pack whose range holds the
// ID (once, then kept), and one frame when the filter says maybe (through the
// local cache, indexcache.go).
//
// This file holds the encodings and the API that cleanup, scrub and repair
// use: scanIndex and its sorted iterator, writeCompactedIndex and
// deleteIndexKeys.

import (
	"bytes"
	"cmp"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"iter"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/cairn-backup/cairn/objstore"
	"lukechampine.com/blake3"
)

// Layout of a compacted generation.
const (
	frameEntries  = 1024 // entries per frame (the last frame of a pack may have fewer)
	packFrames    = 256  // frames per pack (the last pack may have fewer)
	bloomBits     = 10   // filter bits per entry
	bloomK        = 7    // filter probes; with 10 bits an entry about 0.8% false positives
	maxDirFrames  = 1 << 22
	maxBloomWords = 1 << 22 // 32 MiB of filter for one pack: far above what a pack needs
	maxFrameBytes = frameEntries*(32+2*binary.MaxVarintLen64) + 64 + 1 + nonceSize + tagSize
	genPrefix     = "index/c-"
)

var dirMagic = []byte("CRNX")

// indexKeyKind tells the index keys apart.
type indexKeyKind int

const (
	keyUnknown indexKeyKind = iota
	keySegment              // index/<32 hex>: an uncompacted segment
	keyDir                  // index/c-<32 hex>: a generation's directory
	keyPack                 // index/c-<32 hex>-<6 digits>: a generation's pack
)

// parseIndexKey classifies an index key and returns the generation of a
// directory or pack.
func parseIndexKey(key string) (indexKeyKind, string) {
	name, ok := strings.CutPrefix(key, "index/")
	if !ok {
		return keyUnknown, ""
	}
	if isHex32(name) {
		return keySegment, ""
	}
	rest, ok := strings.CutPrefix(name, "c-")
	if !ok || len(rest) < 32 || !isHex32(rest[:32]) {
		return keyUnknown, ""
	}
	gen := rest[:32]
	switch {
	case len(rest) == 32:
		return keyDir, gen
	case len(rest) == 32+7 && rest[32] == '-' && isDigits(rest[33:]):
		return keyPack, gen
	}
	return keyUnknown, ""
}

func isHex32(s string) bool {
	if len(s) != 32 {
		return false
	}
	for i := range len(s) {
		if c := s[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

func isDigits(s string) bool {
	for i := range len(s) {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}

func dirKey(gen string) string           { return genPrefix + gen }
func packKey(gen string, seq int) string { return fmt.Sprintf("%s%s-%06d", genPrefix, gen, seq) }

// frameAADKey is the key a frame is sealed under: its pack's key, "#" and
// the frame's number in the pack, so that frames cannot be moved.
func frameAADKey(pack string, n int) string { return pack + "#" + strconv.Itoa(n) }

// filterAADKey is the key a pack's filter is sealed under.
func filterAADKey(pack string) string { return pack + "#filter" }

// frameInfo locates one frame of a generation.
type frameInfo struct {
	first ID    // its first (smallest) ID
	off   int64 // offset in its pack
	size  int64 // stored bytes
	count int32 // entries
	pack  int32 // index in genDir.packs
	num   int32 // frame number in its pack
}

// packInfo describes one pack of a generation.
type packInfo struct {
	key        string
	size       int64 // frames and filter
	frames     int   // number of frames
	first      int   // index of its first frame in genDir.frames
	k          int   // filter probes
	words      int   // filter size in 8-byte words
	filterOff  int64 // the sealed filter's offset in the pack (after the frames)
	filterSize int64 // and size
}

// genDir is a decoded directory: a generation's frames, and the filters of
// its packs as they are read.
type genDir struct {
	gen     string
	key     string
	entries int64
	packs   []packInfo
	frames  []frameInfo // in ID order over all packs

	mu      sync.Mutex
	filters [][]byte // by pack: nil until read (packFilter)
}

// loadedFilter returns the filter of pack p when it was read, else nil.
func (g *genDir) loadedFilter(p int) []byte {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.filters == nil {
		return nil
	}
	return g.filters[p]
}

// bloomProbe returns the two hashes of id for the filter: little-endian
// bytes 8..15 and 16..23 of the ID (IDs are uniform; the first bytes are
// not, within one pack, whose IDs share a range), the second made odd.
func bloomProbe(id ID) (uint64, uint64) {
	return binary.LittleEndian.Uint64(id[8:16]), binary.LittleEndian.Uint64(id[16:24]) | 1
}

// bloomAdd sets the k bits of id in filter.
func bloomAdd(filter []byte, k int, id ID) {
	m := uint64(len(filter)) * 8
	h1, h2 := bloomProbe(id)
	for i := range uint64(k) {
		p := (h1 + i*h2) % m
		filter[p>>3] |= 1 << (p & 7)
	}
}

// bloomHas reports whether all k bits of id are set.
func bloomHas(filter []byte, k int, id ID) bool {
	m := uint64(len(filter)) * 8
	if m == 0 {
		return false
	}
	h1, h2 := bloomProbe(id)
	for i := range uint64(k) {
		p := (h1 + i*h2) % m
		if filter[p>>3]&(1<<(p&7)) == 0 {
			return false
		}
	}
	return true
}

// bloomSize is the filter size in bytes for n entries: bloomBits an entry,
// rounded up to 8 bytes.
func bloomSize(n int) int { return max(8, (n*bloomBits+63)/64*8) }

// encodeDir lays out a directory's plaintext (FORMAT.md).
func encodeDir(d *genDir) []byte {
	n := 64
	for _, p := range d.packs {
		n += 32 + p.frames*(32+2*binary.MaxVarintLen64)
	}
	b := make([]byte, 0, n)
	b = append(b, dirMagic...)
	b = append(b, 1)
	b = binary.AppendUvarint(b, uint64(d.entries))
	b = binary.AppendUvarint(b, uint64(len(d.packs)))
	for _, p := range d.packs {
		b = binary.AppendUvarint(b, uint64(p.frames))
		for _, f := range d.frames[p.first : p.first+p.frames] {
			b = append(b, f.first[:]...)
			b = binary.AppendUvarint(b, uint64(f.size))
			b = binary.AppendUvarint(b, uint64(f.count))
		}
		b = append(b, byte(p.k))
		b = binary.AppendUvarint(b, uint64(p.words))
		b = binary.AppendUvarint(b, uint64(p.filterSize))
	}
	sum := blake3.Sum256(b)
	return append(b, sum[:]...)
}

// decodeDir parses a directory's plaintext. Every count, size and order is
// checked, so that a damaged directory is refused here and never misleads a
// lookup.
func decodeDir(gen string, b []byte) (*genDir, error) {
	body, err := checkTrailer(b, dirMagic)
	if err != nil {
		return nil, err
	}
	d := decoder{b: body[len(dirMagic)+1:]}
	g := &genDir{gen: gen, key: dirKey(gen)}
	entries := d.uvarint()
	npacks := d.uvarint()
	if d.err == nil && npacks > uint64(len(d.b)) {
		return nil, fmt.Errorf("index directory claims %d packs in %d bytes: %w", npacks, len(d.b), ErrCorrupt)
	}
	var total uint64
	for seq := range int(npacks) {
		if d.err != nil {
			break
		}
		nf := d.uvarint()
		if d.err == nil && (nf == 0 || nf > packFrames*4 || nf > uint64(len(d.b))/34 || len(g.frames)+int(nf) > maxDirFrames) {
			return nil, fmt.Errorf("index directory: pack %d claims %d frames: %w", seq, nf, ErrCorrupt)
		}
		p := packInfo{key: packKey(gen, seq), frames: int(nf), first: len(g.frames)}
		for num := range int(nf) {
			if d.err != nil {
				break
			}
			f := frameInfo{first: d.id(), off: p.size, pack: int32(seq), num: int32(num)}
			size, count := d.uvarint(), d.uvarint()
			if d.err == nil && (size == 0 || size > maxFrameBytes || count == 0 || count > frameEntries*4) {
				return nil, fmt.Errorf("index directory: frame %d of pack %d: %d bytes, %d entries: %w", num, seq, size, count, ErrCorrupt)
			}
			if n := len(g.frames); n > 0 && d.err == nil && compareID(g.frames[n-1].first, f.first) >= 0 {
				return nil, fmt.Errorf("index directory: frames out of order: %w", ErrCorrupt)
			}
			f.size, f.count = int64(size), int32(count)
			p.size += f.size
			total += count
			g.frames = append(g.frames, f)
		}
		k := d.bytes(1)
		words, fsize := d.uvarint(), d.uvarint()
		if d.err == nil && (k[0] < 1 || k[0] > 32 || words == 0 || words > maxBloomWords ||
			fsize < words*8+32+1 || fsize > words*8+32+1+nonceSize+tagSize) {
			return nil, fmt.Errorf("index directory: pack %d filter of %d probes, %d words, %d bytes: %w", seq, k[0], words, fsize, ErrCorrupt)
		}
		if d.err == nil {
			p.k, p.words = int(k[0]), int(words)
			p.filterOff, p.filterSize = p.size, int64(fsize)
			p.size += p.filterSize
		}
		g.packs = append(g.packs, p)
	}
	if d.err != nil {
		return nil, d.err
	}
	if len(d.b) != 0 {
		return nil, fmt.Errorf("index directory has %d trailing bytes: %w", len(d.b), ErrCorrupt)
	}
	if total != entries {
		return nil, fmt.Errorf("index directory says %d entries, its frames %d: %w", entries, total, ErrCorrupt)
	}
	g.entries = int64(entries)
	g.filters = make([][]byte, len(g.packs))
	return g, nil
}

// locate returns the frame of g whose ID range holds id (-1 when id is
// below the first frame) and whether id is that frame's first ID.
func (g *genDir) locate(id ID) (int, bool) {
	i, found := slices.BinarySearchFunc(g.frames, id, func(f frameInfo, id ID) int { return compareID(f.first, id) })
	if !found {
		i--
	}
	return i, found
}

// mayHold says whether g may list id without reading anything: false when
// no frame's range holds it or its pack's filter, already read, says no.
// Unread filters say maybe: the caller then asks inGenerations, which reads
// them.
func (g *genDir) mayHold(id ID) bool {
	i, first := g.locate(id)
	if i < 0 {
		return false
	}
	if first {
		return true
	}
	p := g.frames[i].pack
	f := g.loadedFilter(int(p))
	return f == nil || bloomHas(f, g.packs[p].k, id)
}

// decodeFilter opens a pack's sealed filter: its words, then a BLAKE3-256 of
// them.
func (r *Repository) decodeFilter(g *genDir, p int, body []byte) ([]byte, error) {
	pk := &g.packs[p]
	key := filterAADKey(pk.key)
	plain, err := r.codec.open(key, body, nil, true)
	if err != nil {
		return nil, err
	}
	n := pk.words * 8
	if len(plain) != n+32 {
		return nil, fmt.Errorf("%s: %d bytes, the directory says %d words: %w", key, len(plain), pk.words, ErrCorrupt)
	}
	if sum := blake3.Sum256(plain[:n]); !bytes.Equal(sum[:], plain[n:]) {
		return nil, fmt.Errorf("%s: checksum mismatch: %w", key, ErrCorrupt)
	}
	return plain[:n:n], nil
}

// packFilter returns the filter of pack p of g, reading it (through the
// cache) the first time. A damaged or missing filter is returned as nil
// with no error: the caller then reads the frame, as for a maybe.
func (r *Repository) packFilter(ctx context.Context, g *genDir, p int) ([]byte, error) {
	if f := g.loadedFilter(p); f != nil {
		return f, nil
	}
	pk := &g.packs[p]
	f, err := cachedGet(ctx, r.cache, filterAADKey(pk.key), func(ctx context.Context) ([]byte, error) {
		return r.readRange(ctx, pk.key, pk.filterOff, pk.filterSize)
	}, func(body []byte) ([]byte, error) { return r.decodeFilter(g, p, body) })
	if isDamage(err) || errors.Is(err, objstore.ErrNotExist) {
		r.log.Warn("index filter missing or damaged: lookups in its pack read their frame", "pack", pk.key, "err", err)
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	g.mu.Lock()
	g.filters[p] = f
	g.mu.Unlock()
	return f, nil
}

// openFrame opens the sealed body of frame i of g and checks its entries
// against the directory: the count, the first ID, the order, and that the
// last is below the next frame's first.
func (r *Repository) openFrame(g *genDir, i int, body []byte) ([]indexEntry, error) {
	f := g.frames[i]
	key := frameAADKey(g.packs[f.pack].key, int(f.num))
	plain, err := r.codec.open(key, body, nil, true)
	if err != nil {
		return nil, err
	}
	return checkFrame(g, i, key, plain, nil)
}

// openFrameInPlace is openFrame that decrypts body in place (it must be the
// caller's to change) and decodes the entries into ents[:0], for a reader
// of whole packs that reuses its buffers.
func (r *Repository) openFrameInPlace(g *genDir, i int, body []byte, ents []indexEntry) ([]indexEntry, error) {
	f := g.frames[i]
	key := frameAADKey(g.packs[f.pack].key, int(f.num))
	plain, flags, err := r.codec.unseal(key, body)
	if err != nil {
		return nil, err
	}
	if flags&flagZstd != 0 { // cairn seals frames without zstd; another writer may not
		if plain, err = r.codec.decompress(key, plain, nil, true); err != nil {
			return nil, err
		}
	}
	return checkFrame(g, i, key, plain, ents)
}

// checkFrame decodes the plaintext of frame i of g (sealed under key) into
// ents[:0] and checks it against the directory.
func checkFrame(g *genDir, i int, key string, plain []byte, ents []indexEntry) ([]indexEntry, error) {
	f := g.frames[i]
	entries := ents[:0]
	err := walkIndex(plain, func(n uint64) {
		if uint64(cap(entries)) < n {
			entries = make([]indexEntry, 0, n)
		}
	}, func(e indexEntry) error {
		entries = append(entries, e)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", key, err)
	}
	if len(entries) != int(f.count) || len(entries) == 0 || entries[0].ID != f.first {
		return nil, fmt.Errorf("%s: %d entries, the directory says %d from %s: %w", key, len(entries), f.count, f.first, ErrCorrupt)
	}
	for j := 1; j < len(entries); j++ {
		if compareID(entries[j-1].ID, entries[j].ID) >= 0 {
			return nil, fmt.Errorf("%s: entries out of order: %w", key, ErrCorrupt)
		}
	}
	if i+1 < len(g.frames) && compareID(entries[len(entries)-1].ID, g.frames[i+1].first) >= 0 {
		return nil, fmt.Errorf("%s: entries overlap the next frame: %w", key, ErrCorrupt)
	}
	return entries, nil
}

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

	segs     []string // uncompacted segment keys
	segSizes []int64  // and their sizes as listed
	dirs     []string // generation names with a directory
}

// scanIndex lists index/ once and returns the view of it. Nothing is read
// yet but the listing.
func (r *Repository) scanIndex(ctx context.Context) (*indexScan, error) {
	s := &indexScan{r: r}
	for info, err := range r.store.List(ctx, "index/") {
		if err != nil {
			return nil, fmt.Errorf("blockdiff: list index: %w", err)
		}
		kind, gen := parseIndexKey(info.Key)
		switch kind {
		case keyUnknown:
			continue
		case keySegment:
			s.segs = append(s.segs, info.Key)
			s.segSizes = append(s.segSizes, info.Size)
		case keyDir:
			s.dirs = append(s.dirs, gen)
		}
		s.Keys = append(s.Keys, info.Key)
	}
	s.Segments, s.Generations = len(s.segs), len(s.dirs)
	return s, nil
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
		var mu sync.Mutex
		var segEntries []indexEntry
		_, damaged, err := s.r.readSegments(ctx, s.segs, func(_ string, e []indexEntry) {
			mu.Lock()
			segEntries = append(segEntries, e...)
			mu.Unlock()
		})
		if err != nil {
			yield(indexEntry{}, err)
			return
		}
		s.Damaged = append(s.Damaged, damaged...)
		slices.SortStableFunc(segEntries, func(a, b indexEntry) int { return compareID(a.ID, b.ID) })
		segEntries = slices.CompactFunc(segEntries, func(a, b indexEntry) bool { return a.ID == b.ID })
		sources := []iter.Seq2[indexEntry, error]{func(yield func(indexEntry, error) bool) {
			for _, e := range segEntries {
				if !yield(e, nil) {
					return
				}
			}
		}}
		for _, gen := range s.dirs {
			g, err := s.r.readDir(ctx, gen)
			if isDamage(err) || errors.Is(err, objstore.ErrNotExist) {
				if !errors.Is(err, objstore.ErrNotExist) {
					s.r.log.Warn("damaged index directory: its generation is treated as absent", "directory", dirKey(gen), "err", err)
					s.Damaged = append(s.Damaged, dirKey(gen))
				}
				continue
			}
			if err != nil {
				yield(indexEntry{}, err)
				return
			}
			sources = append(sources, s.genEntries(ctx, g))
		}
		for e, err := range mergeSorted(sources) {
			if !yield(e, err) || err != nil {
				return
			}
		}
	}
}

// genEntries iterates the entries of one generation, a pack at a time (the
// next pack is fetched while this one is iterated, into the buffer of the
// one before: two pack buffers in all, and one frame's entries). Damaged
// frames and missing or short packs are skipped and recorded in s.Damaged.
func (s *indexScan) genEntries(ctx context.Context, g *genDir) iter.Seq2[indexEntry, error] {
	return func(yield func(indexEntry, error) bool) {
		type fetched struct {
			body []byte
			err  error
		}
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		fetch := func(p int, buf []byte) <-chan fetched {
			ch := make(chan fetched, 1)
			if size := g.packs[p].size + 1; int64(cap(buf)) < size {
				buf = make([]byte, 0, size) // +1: the read sees the end without growing
			}
			go func() {
				body, err := s.r.readInto(ctx, g.packs[p].key, buf, g.packs[p].size+1)
				ch <- fetched{body, err}
			}()
			return ch
		}
		var next <-chan fetched
		if len(g.packs) > 0 {
			next = fetch(0, nil)
		}
		var spare []byte // the buffer of the pack before this one
		var ents []indexEntry
		for p := range g.packs {
			got := <-next
			if p+1 < len(g.packs) {
				next = fetch(p+1, spare)
			}
			spare = got.body
			pk := &g.packs[p]
			if errors.Is(got.err, objstore.ErrNotExist) || got.err == nil && int64(len(got.body)) != pk.size || isDamage(got.err) {
				s.r.log.Warn("missing or damaged index pack: its entries are treated as absent", "pack", pk.key, "err", got.err)
				s.Damaged = append(s.Damaged, pk.key)
				continue
			}
			if got.err != nil {
				yield(indexEntry{}, got.err)
				return
			}
			bad := false
			for i := pk.first; i < pk.first+pk.frames; i++ {
				f := g.frames[i]
				entries, err := s.r.openFrameInPlace(g, i, got.body[f.off:f.off+f.size], ents)
				if err != nil {
					bad = true
					continue
				}
				ents = entries
				for _, e := range entries {
					if !yield(e, nil) {
						return
					}
				}
			}
			if bad {
				s.r.log.Warn("damaged frames in an index pack: their entries are treated as absent", "pack", pk.key)
				s.Damaged = append(s.Damaged, pk.key)
			}
		}
	}
}

// mergeSorted merges ascending sources into one ascending sequence, each ID
// once: of equal IDs the entry of the earliest source wins.
func mergeSorted(sources []iter.Seq2[indexEntry, error]) iter.Seq2[indexEntry, error] {
	return func(yield func(indexEntry, error) bool) {
		type head struct {
			e    indexEntry
			next func() (indexEntry, error, bool)
			stop func()
		}
		var heads []*head
		defer func() {
			for _, h := range heads {
				h.stop()
			}
		}()
		advance := func(h *head) (bool, error) {
			e, err, ok := h.next()
			if !ok {
				return false, nil
			}
			if err != nil {
				return false, err
			}
			h.e = e
			return true, nil
		}
		for _, src := range sources {
			next, stop := iter.Pull2(src)
			h := &head{next: next, stop: stop}
			heads = append(heads, h)
			ok, err := advance(h)
			if err != nil {
				yield(indexEntry{}, err)
				return
			}
			if !ok {
				h.stop()
				h.next = nil
			}
		}
		live := slices.DeleteFunc(slices.Clone(heads), func(h *head) bool { return h.next == nil })
		for len(live) > 0 {
			best := 0
			for i := 1; i < len(live); i++ {
				if compareID(live[i].e.ID, live[best].e.ID) < 0 {
					best = i
				}
			}
			e := live[best].e
			if !yield(e, nil) {
				return
			}
			for i := 0; i < len(live); i++ {
				h := live[i]
				for h.e.ID == e.ID {
					ok, err := advance(h)
					if err != nil {
						yield(indexEntry{}, err)
						return
					}
					if !ok {
						live = slices.Delete(live, i, i+1)
						i--
						break
					}
					if compareID(h.e.ID, e.ID) < 0 {
						yield(indexEntry{}, fmt.Errorf("blockdiff: index source out of order at %s: %w", h.e.ID, ErrCorrupt))
						return
					}
				}
			}
		}
	}
}

// readDir reads and decodes a generation's directory, through the cache.
func (r *Repository) readDir(ctx context.Context, gen string) (*genDir, error) {
	key := dirKey(gen)
	return cachedGet(ctx, r.cache, key, func(ctx context.Context) ([]byte, error) {
		return r.readInto(ctx, key, nil, maxMetaSize+1024)
	}, func(body []byte) (*genDir, error) {
		plain, err := r.codec.open(key, body, nil, true)
		if err != nil {
			return nil, fmt.Errorf("blockdiff: %w", err)
		}
		g, err := decodeDir(gen, plain)
		if err != nil {
			return nil, fmt.Errorf("blockdiff: %s: %w", key, err)
		}
		return g, nil
	})
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
// write. Memory: one pack (2^18 entries, about 10 MiB, and its filter of 10
// bits an entry) plus the frame directory (about 45 bytes per 1,024
// entries).
// An empty entries writes an empty generation (a directory with no pack),
// which still replaces the old index. Before the first write, the config is
// upgraded to format version 3 (upgradeFormat); the old keys are the
// caller's to delete afterwards (deleteIndexKeys), under the same lock.
func (r *Repository) writeCompactedIndex(ctx context.Context, entries iter.Seq2[indexEntry, error], opts compactOptions) (*compactResult, error) {
	if err := r.upgradeFormat(ctx, 3); err != nil {
		return nil, err
	}
	name := make([]byte, 16)
	_, _ = rand.Read(name)
	g := &genDir{gen: hex.EncodeToString(name)}
	g.key = dirKey(g.gen)
	res := &compactResult{}
	check := func() error {
		if opts.Check != nil {
			return opts.Check()
		}
		return nil
	}

	// Packs are stored by one goroutine while the next is built.
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	type put struct {
		key  string
		body []byte
	}
	puts := make(chan put, 1)
	putDone := make(chan struct{})
	go func() {
		defer close(putDone)
		for p := range puts {
			if ctx.Err() != nil {
				continue
			}
			err := check()
			if err == nil {
				if err = r.store.Put(ctx, p.key, bytes.NewReader(p.body), int64(len(p.body))); err != nil {
					err = fmt.Errorf("blockdiff: put %s: %w", p.key, err)
				}
			}
			if err != nil {
				cancel(err)
			}
		}
	}()
	fail := func(err error) (*compactResult, error) {
		cancel(err)
		close(puts)
		<-putDone
		return nil, err
	}

	var pack []byte  // sealed frames of the pack being built
	var pending []ID // IDs of the pack being built, for its filter
	var frame []indexEntry
	var last ID
	first := true
	sealFrame := func() {
		p := len(g.packs)
		key := packKey(g.gen, p)
		num := len(g.frames) - g.firstFrameOf(p)
		body := r.codec.seal(nil, frameAADKey(key, num), encodeIndex(frame), false)
		g.frames = append(g.frames, frameInfo{first: frame[0].ID, off: int64(len(pack)), size: int64(len(body)),
			count: int32(len(frame)), pack: int32(p), num: int32(num)})
		pack = append(pack, body...)
		frame = frame[:0]
	}
	flushPack := func() error {
		if len(frame) > 0 {
			sealFrame()
		}
		p := len(g.packs)
		key := packKey(g.gen, p)
		nf := len(g.frames) - g.firstFrameOf(p)
		if nf == 0 {
			return nil
		}
		filter := make([]byte, bloomSize(len(pending)), bloomSize(len(pending))+32)
		for _, id := range pending {
			bloomAdd(filter, bloomK, id)
		}
		sum := blake3.Sum256(filter)
		sealed := r.codec.seal(nil, filterAADKey(key), append(filter, sum[:]...), false)
		off := int64(len(pack))
		pack = append(pack, sealed...)
		g.packs = append(g.packs, packInfo{key: key, size: int64(len(pack)), frames: nf, first: len(g.frames) - nf,
			k: bloomK, words: len(filter) / 8, filterOff: off, filterSize: int64(len(sealed))})
		res.Keys = append(res.Keys, key)
		select {
		case puts <- put{key, pack}:
		case <-ctx.Done():
			return context.Cause(ctx)
		}
		pack, pending = nil, pending[:0]
		return nil
	}
	for e, err := range entries {
		if err != nil {
			return fail(err)
		}
		if !first && compareID(last, e.ID) >= 0 {
			return fail(fmt.Errorf("blockdiff: compaction: index entries out of order (%s after %s)", e.ID, last))
		}
		if e.Stored < 0 || e.Length < 0 {
			return fail(fmt.Errorf("blockdiff: compaction: entry %s has negative sizes", e.ID))
		}
		first, last = false, e.ID
		frame = append(frame, e)
		pending = append(pending, e.ID)
		res.Entries++
		if len(frame) == frameEntries {
			sealFrame()
			if len(g.frames)-g.firstFrameOf(len(g.packs)) == packFrames {
				if err := flushPack(); err != nil {
					return fail(err)
				}
			}
		}
		if ctx.Err() != nil {
			return fail(context.Cause(ctx))
		}
	}
	if err := flushPack(); err != nil {
		return fail(err)
	}
	close(puts)
	<-putDone
	if err := context.Cause(ctx); err != nil {
		return nil, err
	}
	g.entries = res.Entries
	res.Packs = len(g.packs)
	if err := check(); err != nil {
		return nil, err
	}
	if err := r.putMeta(ctx, g.key, encodeDir(g)); err != nil {
		return nil, err
	}
	res.Keys = append(res.Keys, g.key)
	r.log.Info("index compacted", "generation", g.gen, "entries", res.Entries, "packs", res.Packs, "frames", len(g.frames))
	return res, nil
}

// firstFrameOf is the index in g.frames of pack p's first frame, for the
// pack being built (p == len(g.packs)) too.
func (g *genDir) firstFrameOf(p int) int {
	if p < len(g.packs) {
		return g.packs[p].first
	}
	if n := len(g.packs); n > 0 {
		return g.packs[n-1].first + g.packs[n-1].frames
	}
	return 0
}

// deleteIndexKeys deletes the keys of an index that a compaction replaced:
// directories first (a generation without its directory is never read),
// then packs and segments. A key already gone is not an error. check, when
// set, is called before each deletion.
func (r *Repository) deleteIndexKeys(ctx context.Context, keys []string, check func() error) error {
	keys = slices.Clone(keys)
	slices.SortStableFunc(keys, func(a, b string) int {
		ka, _ := parseIndexKey(a)
		kb, _ := parseIndexKey(b)
		return cmp.Compare(boolInt(ka != keyDir), boolInt(kb != keyDir))
	})
	ndirs := 0
	for _, k := range keys {
		if kind, _ := parseIndexKey(k); kind == keyDir {
			ndirs++
		}
	}
	del := func(ctx context.Context, key string) error {
		if check != nil {
			if err := check(); err != nil {
				return err
			}
		}
		if err := r.store.Delete(ctx, key); err != nil && !errors.Is(err, objstore.ErrNotExist) {
			return fmt.Errorf("blockdiff: delete index object %s: %w", key, err)
		}
		return nil
	}
	for _, k := range keys[:ndirs] {
		if err := del(ctx, k); err != nil {
			return err
		}
	}
	rest := keys[ndirs:]
	return r.parallel(ctx, len(rest), func(ctx context.Context, i int) error { return del(ctx, rest[i]) })
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// upgradeFormat raises the config's format version to v (3: compacted index
// generations, manifests with headers) before the first object that needs it
// is written, so that older readers refuse the repository rather than
// misread it; an encrypted config gets its MAC again. It does nothing when
// the config is already at v or above. Unlike upgradeConfig it is not best
// effort: a failure must stop the write that needs the new version.
func (r *Repository) upgradeFormat(ctx context.Context, v int) error {
	r.upgradeMu.Lock()
	defer r.upgradeMu.Unlock()
	if r.formatVersion == 0 {
		r.formatVersion = r.cfg.Version
	}
	if r.formatVersion >= v {
		return nil
	}
	if v > FormatVersion {
		return fmt.Errorf("blockdiff: format version %d asked, this build writes %d", v, FormatVersion)
	}
	cfg := r.cfg // r.cfg itself stays as read: others read it unlocked
	cfg.Version = v
	if cfg.Encryption != nil {
		master := make([]byte, masterKeySize)
		copy(master[32:], r.codec.idKey)
		if r.legacyMaster != nil { // a version-1 key: wrapped again for version 2 on
			enc := *cfg.Encryption
			nonce := make([]byte, nonceSize)
			_, _ = rand.Read(nonce)
			enc.WrappedKey = r.legacyWrap.Seal(nonce, nonce, r.legacyMaster, wrapAAD(cfg.ID, v))
			cfg.Encryption = &enc
		}
		cfg.MAC = configMAC(cfg, master)
	}
	body, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return fmt.Errorf("blockdiff: encode config: %w", err)
	}
	if err := r.store.Put(ctx, configKey, bytes.NewReader(body), int64(len(body))); err != nil {
		return fmt.Errorf("blockdiff: upgrade the config to format version %d: %w", v, err)
	}
	r.legacyMaster, r.legacyWrap = nil, nil
	r.formatVersion = v
	r.log.Info("config upgraded", "format_version", v, "id", cfg.ID)
	return nil
}
