package blockdiff

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"regexp"
	"time"

	"lukechampine.com/blake3"
)

// Kind says what a version holds.
type Kind string

// Version kinds.
const (
	KindBlock  Kind = "block"  // a volume image cut into fixed-size blocks
	KindStream Kind = "stream" // a stream cut by content-defined chunking (BackupStream)
)

// Status is the state of a version.
type Status string

// Version states.
const (
	StatusIncomplete Status = "incomplete" // a backup is running or died before finishing
	StatusValid      Status = "valid"      // every block was stored; restorable
	StatusInvalid    Status = "invalid"    // a scrub found damage (or, before format notes of 2026-12, the backup failed)
	StatusFailed     Status = "failed"     // the backup failed or was interrupted: enforce removes it after its grace
	// StatusDamaged is never stored: List reports it for a manifest that
	// cannot be read (corrupt, failed authentication, or of an unknown
	// format), with the reason in Error. Such a version can only be removed.
	StatusDamaged Status = "damaged"
)

// Stats are the counters of the backup that made a version.
type Stats struct {
	BytesRead       int64   `json:"bytes_read"`       // bytes read from the source
	BytesWritten    int64   `json:"bytes_written"`    // stored bytes of new data objects
	BlocksTotal     int64   `json:"blocks_total"`     // new + deduped + sparse + from_base + verified
	BlocksNew       int64   `json:"blocks_new"`       // blocks stored as new objects
	BlocksSparse    int64   `json:"blocks_sparse"`    // all-zero blocks and holes
	BlocksDeduped   int64   `json:"blocks_deduped"`   // blocks read whose object already existed
	BlocksFromBase  int64   `json:"blocks_from_base"` // references copied from the base unread
	BlocksVerified  int64   `json:"blocks_verified"`  // blocks outside the hints re-read and found equal to the base
	DurationSeconds float64 `json:"duration_seconds"` // wall time of the backup
}

// Ref is one entry of a version's block list: a data object, or a sparse
// (all-zero) extent with no object.
type Ref struct {
	ID     ID    // zero for a sparse reference
	Length int64 // plaintext length of this block or chunk
	Sparse bool  // true for all-zero data, stored as no object
}

// Version is a version manifest: the metadata of one backup and its block list.
type Version struct {
	ID        string            `json:"id"`
	Volume    string            `json:"volume"`
	Kind      Kind              `json:"kind"`
	Size      int64             `json:"size"`
	BlockSize int               `json:"block_size"`
	Created   time.Time         `json:"created"`
	Labels    map[string]string `json:"labels"`
	Protected bool              `json:"protected"`
	Status    Status            `json:"status"`
	Error     string            `json:"error,omitempty"`
	Base      string            `json:"base,omitempty"`
	Stats     Stats             `json:"stats"`
	// Damage lists blocks a scrub found missing or corrupt (at most
	// maxDamage) when it marked the version invalid (scrub.go).
	Damage []Damage `json:"damage,omitempty"`

	refs []Ref
}

// Refs returns the version's block references in order: those of a Version
// read by Repository.Version or returned by a backup; nil for the versions
// of List and of the header rewrites (SetLabels, SetProtected), which read
// no references.
func (v *Version) Refs() []Ref { return v.refs }

// versionKey is the store key of a manifest.
func versionKey(id string) string { return "versions/" + id }

var versionIDRe = regexp.MustCompile(`^[0-9A-Za-z][0-9A-Za-z._-]{0,63}$`)

// checkVersionID rejects IDs that could escape the versions/ prefix.
func checkVersionID(id string) error {
	if !versionIDRe.MatchString(id) {
		return fmt.Errorf("blockdiff: bad version ID %q: %w", id, ErrVersionNotFound)
	}
	return nil
}

var (
	manifestMagic = []byte("CRNV")
	indexMagic    = []byte("CRNI")
)

const (
	refSparse byte = 0
	refData   byte = 1
)

// encodeManifest lays out a manifest's plaintext (FORMAT.md, "versions").
func encodeManifest(v *Version) ([]byte, error) {
	meta, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("blockdiff: encode manifest: %w", err)
	}
	b := make([]byte, 0, 16+len(meta)+len(v.refs)*36)
	b = append(b, manifestMagic...)
	b = append(b, 1)
	b = binary.BigEndian.AppendUint32(b, uint32(len(meta)))
	b = append(b, meta...)
	b = binary.AppendUvarint(b, uint64(len(v.refs)))
	for _, r := range v.refs {
		if r.Sparse {
			b = append(b, refSparse)
		} else {
			b = append(b, refData)
			b = append(b, r.ID[:]...)
		}
		b = binary.AppendUvarint(b, uint64(r.Length))
	}
	sum := blake3.Sum256(b)
	return append(b, sum[:]...), nil
}

// decodeManifest parses a version-1 manifest's plaintext (the encoding of
// repository formats 1 and 2), checking its trailer and that the references
// add up to the version's size.
func decodeManifest(b []byte) (*Version, error) {
	var refs []Ref
	v, err := walkManifest(b, func(n uint64) { refs = make([]Ref, 0, n) }, func(r Ref) error {
		refs = append(refs, r)
		return nil
	})
	if err != nil {
		return nil, err
	}
	v.refs = refs
	return v, nil
}

// walkManifest parses a version-1 manifest's plaintext like decodeManifest,
// but hands each reference to each (when not nil) instead of keeping it, so
// that reading a header costs no memory per reference. The trailer is
// checked before the first reference is handed out; size, when not nil, is
// called with the number of references first.
func walkManifest(b []byte, size func(n uint64), each func(Ref) error) (*Version, error) {
	body, err := checkTrailer(b, manifestMagic)
	if err != nil {
		return nil, err
	}
	d := decoder{b: body[5:]}
	n := int(d.uint32())
	meta := d.bytes(n)
	if d.err != nil {
		return nil, d.err
	}
	v := &Version{}
	if err := json.Unmarshal(meta, v); err != nil {
		return nil, fmt.Errorf("manifest metadata: %v: %w", err, ErrCorrupt)
	}
	count := d.uvarint()
	if d.err == nil && count > uint64(len(d.b)) { // each ref takes at least 2 bytes
		return nil, fmt.Errorf("manifest claims %d refs in %d bytes: %w", count, len(d.b), ErrCorrupt)
	}
	if size != nil && d.err == nil {
		size(count)
	}
	var total int64
	for i := uint64(0); i < count && d.err == nil; i++ {
		r := d.ref()
		if d.err != nil {
			break
		}
		total += r.Length
		if each != nil {
			if err := each(r); err != nil {
				return nil, err
			}
		}
	}
	if d.err != nil {
		return nil, d.err
	}
	if len(d.b) != 0 {
		return nil, fmt.Errorf("manifest has %d trailing bytes: %w", len(d.b), ErrCorrupt)
	}
	if v.Status == StatusValid && total != v.Size {
		return nil, fmt.Errorf("manifest refs cover %d bytes, size is %d: %w", total, v.Size, ErrCorrupt)
	}
	return v, nil
}

// checkTrailer verifies the magic, format byte and BLAKE3 trailer of a
// manifest or index plaintext and returns it without the trailer.
func checkTrailer(b, magic []byte) ([]byte, error) {
	if len(b) < len(magic)+1+32 || !bytes.Equal(b[:len(magic)], magic) {
		return nil, fmt.Errorf("bad magic or too short: %w", ErrCorrupt)
	}
	if b[len(magic)] != 1 {
		return nil, fmt.Errorf("format %d: %w", b[len(magic)], ErrUnsupportedFormat)
	}
	body, trailer := b[:len(b)-32], b[len(b)-32:]
	if sum := blake3.Sum256(body); !bytes.Equal(sum[:], trailer) {
		return nil, fmt.Errorf("checksum mismatch: %w", ErrCorrupt)
	}
	return body, nil
}

// decoder reads binary fields, remembering the first error so that callers
// check once.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail(what string) {
	if d.err == nil {
		d.err = fmt.Errorf("truncated %s: %w", what, ErrCorrupt)
	}
	d.b = nil
}

func (d *decoder) uint32() uint32 {
	if len(d.b) < 4 {
		d.fail("length")
		return 0
	}
	v := binary.BigEndian.Uint32(d.b)
	d.b = d.b[4:]
	return v
}

func (d *decoder) bytes(n int) []byte {
	if n < 0 || len(d.b) < n {
		d.fail("field")
		return nil
	}
	v := d.b[:n]
	d.b = d.b[n:]
	return v
}

func (d *decoder) uvarint() uint64 {
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail("varint")
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) id() ID {
	var id ID
	copy(id[:], d.bytes(len(id)))
	return id
}

func (d *decoder) ref() Ref {
	tag := d.bytes(1)
	if d.err != nil {
		return Ref{}
	}
	var r Ref
	switch tag[0] {
	case refSparse:
		r.Sparse = true
	case refData:
		r.ID = d.id()
	default:
		d.err = fmt.Errorf("unknown ref tag %d: %w", tag[0], ErrCorrupt)
		return Ref{}
	}
	l := d.uvarint()
	if l > MaxBlockSize*4 {
		d.err = fmt.Errorf("ref length %d too large: %w", l, ErrCorrupt)
		return Ref{}
	}
	r.Length = int64(l)
	return r
}

// indexEntry describes one data object in an index segment.
type indexEntry struct {
	ID     ID
	Stored int64 // size of the stored object in bytes
	Length int64 // plaintext length
}

// encodeIndex lays out an index segment's plaintext (FORMAT.md, "index").
func encodeIndex(entries []indexEntry) []byte {
	b := make([]byte, 0, 16+len(entries)*40)
	b = append(b, indexMagic...)
	b = append(b, 1)
	b = binary.AppendUvarint(b, uint64(len(entries)))
	for _, e := range entries {
		b = append(b, e.ID[:]...)
		b = binary.AppendUvarint(b, uint64(e.Stored))
		b = binary.AppendUvarint(b, uint64(e.Length))
	}
	sum := blake3.Sum256(b)
	return append(b, sum[:]...)
}

// decodeIndex parses an index segment's plaintext.
func decodeIndex(b []byte) ([]indexEntry, error) {
	var out []indexEntry
	err := walkIndex(b, func(n uint64) { out = make([]indexEntry, 0, n) }, func(e indexEntry) error {
		out = append(out, e)
		return nil
	})
	return out, err
}

// walkIndex decodes an index segment's plaintext as decodeIndex does, but
// calls each with every entry in turn instead of returning them all (size,
// when not nil, first with their number), so that a large segment costs
// its plaintext only. The entries are only known to be right when walkIndex
// returns nil: the checksum is checked first, the encoding as it goes.
func walkIndex(b []byte, size func(n uint64), each func(indexEntry) error) error {
	body, err := checkTrailer(b, indexMagic)
	if err != nil {
		return err
	}
	d := decoder{b: body[5:]}
	count := d.uvarint()
	if d.err == nil && count > uint64(len(d.b))/34 {
		return fmt.Errorf("index claims %d entries in %d bytes: %w", count, len(d.b), ErrCorrupt)
	}
	if d.err == nil && size != nil {
		size(count)
	}
	for i := uint64(0); i < count && d.err == nil; i++ {
		e := indexEntry{ID: d.id()}
		e.Stored = int64(d.uvarint() & (1<<62 - 1))
		e.Length = int64(d.uvarint() & (1<<62 - 1))
		if d.err != nil {
			break
		}
		if err := each(e); err != nil {
			return err
		}
	}
	if d.err == nil && len(d.b) != 0 {
		return fmt.Errorf("index has %d trailing bytes: %w", len(d.b), ErrCorrupt)
	}
	return d.err
}
