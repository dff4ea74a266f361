package blockdiff

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"lukechampine.com/blake3"

	"github.com/cairn-backup/cairn/objstore"
)

// Framed manifests (repository format 3, FORMAT.md "Version manifests"): the
// stored object is not one sealed envelope but a short plain preamble and a
// sequence of independently sealed frames, the header first:
//
//	"CRNM" || 0x03 || uint32 length || header frame || (uint32 length || refs frame)...
//
// The header frame holds the metadata JSON and a summary of the references
// (count, frames, their stored bytes, a BLAKE3 digest of their encoding), so
// that ls, enforce, rm, protect and label read a few KiB with a ranged Get
// and never the references; a rewrite of the header copies the refs frames
// byte for byte. The refs frames hold the references in the version-1
// encoding, at most refsPerFrame each, so that cleanup and scrub stream them
// one frame at a time.

var (
	manifestV3Magic = []byte("CRNM")
	headerMagic     = []byte("CRNH")
)

const (
	manifestV3Format byte = 3
	// manifestPreamble is the plain prefix of a framed manifest: magic,
	// format byte, length of the sealed header frame.
	manifestPreamble = 4 + 1 + 4
	// refsPerFrame bounds the references of one refs frame (about 1.2 MiB).
	refsPerFrame = 1 << 15
	// maxHeaderFrame and maxRefsFrame bound the sealed size of a frame, so
	// that a damaged length cannot make a reader allocate without limit.
	maxHeaderFrame = 4 << 20
	maxRefsFrame   = 4 << 20
	// headPeek is how much of a manifest a header read fetches first.
	headPeek = 4096
	// maxRefEncoding is the longest encoding of one reference: tag, ID and
	// a length uvarint of at most 5 bytes (MaxBlockSize*4 < 2^35).
	maxRefEncoding = 1 + 32 + 5
)

// refsSummary is what a framed manifest's header says about its references.
type refsSummary struct {
	count     uint64   // references
	frames    uint64   // refs frames
	refsBytes uint64   // stored bytes of the refs frames, length prefixes included
	digest    [32]byte // BLAKE3-256 of the references' encoding, all frames in order
}

// framedManifests reports whether new manifests are framed: when the
// config is of format 3 or later, as read or as this process raised it
// (upgradeFormat); older readers would see a framed manifest as damaged.
func (r *Repository) framedManifests() bool {
	r.upgradeMu.Lock()
	defer r.upgradeMu.Unlock()
	v := r.formatVersion
	if v == 0 {
		v = r.cfg.Version
	}
	return v >= 3
}

// isFramedManifest reports whether a manifest object's body is framed (format 3).
func isFramedManifest(body []byte) bool {
	return len(body) >= 5 && bytes.Equal(body[:4], manifestV3Magic) && body[4] == manifestV3Format
}

// appendRef appends the version-1 encoding of one reference.
func appendRef(b []byte, r Ref) []byte {
	if r.Sparse {
		b = append(b, refSparse)
	} else {
		b = append(b, refData)
		b = append(b, r.ID[:]...)
	}
	return binary.AppendUvarint(b, uint64(r.Length))
}

// headerAAD and refsAAD are the keys frames are sealed under: the manifest's
// key and the frame's role, so that a frame cannot move to another manifest
// nor a refs frame pass for a header.
func headerAAD(key string) string { return key + "#header" }
func refsAAD(key string) string   { return key + "#refs" }

// encodeHeader lays out a header frame's plaintext.
func encodeHeader(v *Version, s refsSummary) ([]byte, error) {
	meta, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("blockdiff: encode manifest: %w", err)
	}
	b := make([]byte, 0, 64+len(meta)+32+32)
	b = append(b, headerMagic...)
	b = append(b, manifestV3Format)
	b = binary.BigEndian.AppendUint32(b, uint32(len(meta)))
	b = append(b, meta...)
	b = binary.AppendUvarint(b, s.count)
	b = binary.AppendUvarint(b, s.frames)
	b = binary.AppendUvarint(b, s.refsBytes)
	b = append(b, s.digest[:]...)
	sum := blake3.Sum256(b)
	return append(b, sum[:]...), nil
}

// decodeHeader parses a header frame's plaintext.
func decodeHeader(b []byte) (*Version, refsSummary, error) {
	var s refsSummary
	if len(b) < 5+4+32 || !bytes.Equal(b[:4], headerMagic) {
		return nil, s, fmt.Errorf("manifest header: bad magic or too short: %w", ErrCorrupt)
	}
	if b[4] != manifestV3Format {
		return nil, s, fmt.Errorf("manifest header format %d: %w", b[4], ErrUnsupportedFormat)
	}
	body, trailer := b[:len(b)-32], b[len(b)-32:]
	if sum := blake3.Sum256(body); !bytes.Equal(sum[:], trailer) {
		return nil, s, fmt.Errorf("manifest header: checksum mismatch: %w", ErrCorrupt)
	}
	d := decoder{b: body[5:]}
	meta := d.bytes(int(d.uint32()))
	s.count = d.uvarint()
	s.frames = d.uvarint()
	s.refsBytes = d.uvarint()
	copy(s.digest[:], d.bytes(32))
	if d.err != nil {
		return nil, s, fmt.Errorf("manifest header: %w", d.err)
	}
	if len(d.b) != 0 {
		return nil, s, fmt.Errorf("manifest header has %d trailing bytes: %w", len(d.b), ErrCorrupt)
	}
	// Every frame holds at least one reference and takes at least 4+1+2 bytes.
	if s.frames > s.count || s.count > s.frames*refsPerFrame || s.refsBytes < s.frames*7 || s.refsBytes > s.frames*(4+maxRefsFrame) {
		return nil, s, fmt.Errorf("manifest header: %d references in %d frames of %d bytes: %w", s.count, s.frames, s.refsBytes, ErrCorrupt)
	}
	v := &Version{}
	if err := json.Unmarshal(meta, v); err != nil {
		return nil, s, fmt.Errorf("manifest metadata: %v: %w", err, ErrCorrupt)
	}
	return v, s, nil
}

// encodeFramed seals v (header and references) as a framed manifest object.
func (r *Repository) encodeFramed(v *Version) ([]byte, error) {
	key := versionKey(v.ID)
	var s refsSummary
	h := blake3.New(32, nil)
	var frames []byte
	plain := make([]byte, 0, min(len(v.refs), refsPerFrame)*maxRefEncoding)
	var sealed []byte
	for i := 0; i < len(v.refs); i += refsPerFrame {
		plain = plain[:0]
		for _, ref := range v.refs[i:min(i+refsPerFrame, len(v.refs))] {
			plain = appendRef(plain, ref)
		}
		_, _ = h.Write(plain)
		sealed = r.codec.seal(sealed, refsAAD(key), plain, true)
		if len(sealed) > maxRefsFrame {
			return nil, fmt.Errorf("blockdiff: manifest %s: refs frame of %d bytes", v.ID, len(sealed))
		}
		frames = binary.BigEndian.AppendUint32(frames, uint32(len(sealed)))
		frames = append(frames, sealed...)
		s.frames++
	}
	s.count, s.refsBytes = uint64(len(v.refs)), uint64(len(frames))
	h.Sum(s.digest[:0])
	head, err := r.sealHeader(key, v, s)
	if err != nil {
		return nil, err
	}
	return append(head, frames...), nil
}

// sealHeader returns the preamble and the sealed header frame of a framed manifest.
func (r *Repository) sealHeader(key string, v *Version, s refsSummary) ([]byte, error) {
	plain, err := encodeHeader(v, s)
	if err != nil {
		return nil, err
	}
	sealed := r.codec.seal(nil, headerAAD(key), plain, true)
	if len(sealed) > maxHeaderFrame {
		return nil, fmt.Errorf("blockdiff: manifest %s: header of %d bytes (at most %d): too many labels?", v.ID, len(sealed), maxHeaderFrame)
	}
	out := make([]byte, 0, manifestPreamble+len(sealed))
	out = append(out, manifestV3Magic...)
	out = append(out, manifestV3Format)
	out = binary.BigEndian.AppendUint32(out, uint32(len(sealed)))
	return append(out, sealed...), nil
}

// openHeader opens the sealed header frame of a framed manifest.
func (r *Repository) openHeader(key string, sealed []byte) (*Version, refsSummary, error) {
	plain, err := r.codec.open(headerAAD(key), sealed, nil, true)
	if err != nil {
		return nil, refsSummary{}, fmt.Errorf("manifest header: %w", err)
	}
	return decodeHeader(plain)
}

// headerLen returns the length of the sealed header frame a framed
// manifest's preamble announces.
func headerLen(preamble []byte) (int, error) {
	n := binary.BigEndian.Uint32(preamble[5:manifestPreamble])
	if n < 1 || n > maxHeaderFrame {
		return 0, fmt.Errorf("manifest header frame of %d bytes: %w", n, ErrCorrupt)
	}
	return int(n), nil
}

// getRange reads bytes [off, off+n) of key (fewer at the end of the object).
func (r *Repository) getRange(ctx context.Context, key string, off, n int64) ([]byte, error) {
	rc, err := r.store.Get(ctx, key, off, n)
	if err != nil {
		return nil, fmt.Errorf("blockdiff: get %s: %w", key, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, n))
	if err != nil {
		return nil, fmt.Errorf("blockdiff: read %s: %w", key, err)
	}
	return b, nil
}

// versionHeader reads the metadata of version id without its references:
// one ranged Get of the first bytes of a framed manifest (two when its
// header is longer); a manifest of formats 1 and 2 is read whole, checked,
// and its references skipped without being kept. The Version it returns
// holds no references.
func (r *Repository) versionHeader(ctx context.Context, id string) (*Version, error) {
	if err := checkVersionID(id); err != nil {
		return nil, err
	}
	key := versionKey(id)
	v, err := r.readHeader(ctx, key)
	if errors.Is(err, objstore.ErrNotExist) {
		return nil, fmt.Errorf("%w: %q", ErrVersionNotFound, id)
	}
	if err != nil {
		return nil, fmt.Errorf("blockdiff: version %s: %w", id, err)
	}
	if v.ID != id {
		return nil, fmt.Errorf("blockdiff: manifest %s names itself %q: %w", id, v.ID, ErrCorrupt)
	}
	return v, nil
}

func (r *Repository) readHeader(ctx context.Context, key string) (*Version, error) {
	head, err := r.getRange(ctx, key, 0, headPeek)
	if err != nil {
		return nil, err
	}
	if !isFramedManifest(head) {
		if len(head) == headPeek { // the object is longer: read it whole, in one consistent Get
			rc, err := r.store.Get(ctx, key, 0, -1)
			if err != nil {
				return nil, fmt.Errorf("blockdiff: get %s: %w", key, err)
			}
			defer rc.Close()
			body, release, err := readLegacyManifest(ctx, rc)
			if err != nil {
				return nil, fmt.Errorf("blockdiff: read %s: %w", key, err)
			}
			defer release()
			head = body
		}
		plain, err := r.codec.open(key, head, nil, true)
		if err != nil {
			return nil, err
		}
		return walkManifest(plain, nil, nil)
	}
	if len(head) < manifestPreamble {
		return nil, fmt.Errorf("truncated manifest preamble: %w", ErrCorrupt)
	}
	n, err := headerLen(head)
	if err != nil {
		return nil, err
	}
	if need := manifestPreamble + n; len(head) < need {
		if len(head) < headPeek {
			return nil, fmt.Errorf("truncated manifest header (%d of %d bytes): %w", len(head), need, ErrCorrupt)
		}
		// Read again from the start, so that both parts come from one
		// version of an object that may have been rewritten meanwhile.
		if head, err = r.getRange(ctx, key, 0, int64(need)); err != nil {
			return nil, err
		}
		if len(head) < need || !isFramedManifest(head) {
			return nil, fmt.Errorf("truncated manifest header (%d of %d bytes): %w", len(head), need, ErrCorrupt)
		}
		if m, err := headerLen(head); err != nil || m != n {
			return nil, fmt.Errorf("manifest changed while read: %w", ErrCorrupt)
		}
	}
	v, _, err := r.openHeader(key, head[manifestPreamble:manifestPreamble+n])
	return v, err
}

// scanVersion reads version id whole, in one Get, and calls each with every
// reference in order (nil: only check them). size, when not nil, is called
// with the number of references before the first. A framed manifest is read
// one frame at a time; its references are only known to be right when
// scanVersion returns nil (a damaged refs frame is found at its end), so a
// caller that acted on them must undo that on an error.
func (r *Repository) scanVersion(ctx context.Context, id string, size func(n uint64), each func(Ref) error) (*Version, error) {
	if err := checkVersionID(id); err != nil {
		return nil, err
	}
	key := versionKey(id)
	v, err := r.scanManifest(ctx, key, size, each)
	if errors.Is(err, objstore.ErrNotExist) {
		return nil, fmt.Errorf("%w: %q", ErrVersionNotFound, id)
	}
	if err != nil {
		return nil, fmt.Errorf("blockdiff: version %s: %w", id, err)
	}
	if v.ID != id {
		return nil, fmt.Errorf("blockdiff: manifest %s names itself %q: %w", id, v.ID, ErrCorrupt)
	}
	return v, nil
}

func (r *Repository) scanManifest(ctx context.Context, key string, size func(n uint64), each func(Ref) error) (*Version, error) {
	rc, err := r.store.Get(ctx, key, 0, -1)
	if err != nil {
		return nil, fmt.Errorf("get %s: %w", key, err)
	}
	defer rc.Close()
	br := bufio.NewReaderSize(rc, 64<<10)
	if magic, _ := br.Peek(5); !isFramedManifest(magic) {
		body, release, err := readLegacyManifest(ctx, br)
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", key, err)
		}
		defer release()
		plain, err := r.codec.open(key, body, nil, true)
		if err != nil {
			return nil, err
		}
		return walkManifest(plain, size, each)
	}
	v, s, err := r.readFramedHeader(br, key)
	if err != nil {
		return nil, err
	}
	if size != nil {
		size(s.count)
	}
	if err := r.scanRefs(br, key, v, s, each); err != nil {
		return nil, err
	}
	return v, nil
}

// Manifests of formats 1 and 2 are one envelope, references included, so
// that reading one (for its header or its references) takes it whole into
// memory, then its plaintext. Those up to legacySmall bytes are read as
// many at a time as the callers run (Transfers), larger ones one at a time
// in the process (legacyBig), so that marking a repository of large legacy
// manifests (a 10 TiB volume's is about 100 MB) holds one of them, not
// Transfers. (legacySmall is a variable for tests.)
var (
	legacySmall int64 = 4 << 20
	legacyBig         = make(chan struct{}, 1)
)

// readLegacyManifest reads a manifest of format 1 or 2 whole from r; a
// manifest longer than legacySmall is read on, and must be used, while the
// caller holds legacyBig: release gives it back (a no-op for a small one).
func readLegacyManifest(ctx context.Context, r io.Reader) (body []byte, release func(), err error) {
	release = func() {}
	body, err = io.ReadAll(io.LimitReader(r, legacySmall+1))
	if err != nil || int64(len(body)) <= legacySmall {
		return body, release, err
	}
	select {
	case legacyBig <- struct{}{}:
	case <-ctx.Done():
		return nil, release, ctx.Err()
	}
	rest, err := readLimited(r, maxMetaSize+1024-int64(len(body)))
	if err != nil {
		<-legacyBig
		return nil, release, err
	}
	return append(body, rest...), func() { <-legacyBig }, nil
}

// readLimited reads r to its end, refusing more than limit bytes.
func readLimited(r io.Reader, limit int64) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("larger than %d bytes: %w", limit, ErrCorrupt)
	}
	return b, nil
}

// readFramedHeader reads the preamble and header frame of a framed manifest
// from br and opens it.
func (r *Repository) readFramedHeader(br *bufio.Reader, key string) (*Version, refsSummary, error) {
	pre := make([]byte, manifestPreamble)
	if _, err := io.ReadFull(br, pre); err != nil {
		return nil, refsSummary{}, readErr("manifest preamble", err)
	}
	n, err := headerLen(pre)
	if err != nil {
		return nil, refsSummary{}, err
	}
	sealed := make([]byte, n)
	if _, err := io.ReadFull(br, sealed); err != nil {
		return nil, refsSummary{}, readErr("manifest header", err)
	}
	return r.openHeader(key, sealed)
}

// readErr turns a short read of a manifest into damage, and keeps any other
// error (the store's) as it is.
func readErr(what string, err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("truncated %s: %w", what, ErrCorrupt)
	}
	return fmt.Errorf("read %s: %w", what, err)
}

// scanRefs reads the refs frames that follow a framed manifest's header and
// checks them against its summary and the version's size.
func (r *Repository) scanRefs(br *bufio.Reader, key string, v *Version, s refsSummary, each func(Ref) error) error {
	h := blake3.New(32, nil)
	var sealed, plain []byte
	var count, total int64
	var read uint64
	var lenBuf [4]byte
	for i := uint64(0); i < s.frames; i++ {
		if _, err := io.ReadFull(br, lenBuf[:]); err != nil {
			return readErr("refs frame", err)
		}
		n := binary.BigEndian.Uint32(lenBuf[:])
		if n < 1 || n > maxRefsFrame {
			return fmt.Errorf("refs frame of %d bytes: %w", n, ErrCorrupt)
		}
		read += 4 + uint64(n)
		if cap(sealed) < int(n) {
			sealed = make([]byte, n)
		}
		sealed = sealed[:n]
		if _, err := io.ReadFull(br, sealed); err != nil {
			return readErr("refs frame", err)
		}
		var err error
		if plain, err = r.codec.open(refsAAD(key), sealed, plain, true); err != nil {
			return fmt.Errorf("refs frame %d: %w", i, err)
		}
		_, _ = h.Write(plain)
		d := decoder{b: plain}
		if len(d.b) == 0 {
			return fmt.Errorf("empty refs frame %d: %w", i, ErrCorrupt)
		}
		for len(d.b) > 0 {
			ref := d.ref()
			if d.err != nil {
				return fmt.Errorf("refs frame %d: %w", i, d.err)
			}
			count++
			total += ref.Length
			if uint64(count) > s.count {
				return fmt.Errorf("more references than the %d the header says: %w", s.count, ErrCorrupt)
			}
			if each != nil {
				if err := each(ref); err != nil {
					return err
				}
			}
		}
	}
	if _, err := br.ReadByte(); err != io.EOF {
		if err != nil {
			return fmt.Errorf("read manifest: %w", err)
		}
		return fmt.Errorf("manifest has bytes after its last refs frame: %w", ErrCorrupt)
	}
	var digest [32]byte
	h.Sum(digest[:0])
	switch {
	case uint64(count) != s.count || read != s.refsBytes:
		return fmt.Errorf("%d references in %d bytes, the header says %d in %d: %w", count, read, s.count, s.refsBytes, ErrCorrupt)
	case digest != s.digest:
		return fmt.Errorf("references do not match the header's digest: %w", ErrCorrupt)
	case v.Status == StatusValid && total != v.Size:
		return fmt.Errorf("manifest refs cover %d bytes, size is %d: %w", total, v.Size, ErrCorrupt)
	}
	return nil
}

// updateHeader rewrites the metadata of version id after fn changes it (fn
// sees no references). A framed manifest gets a new header frame followed
// by its refs frames copied byte for byte from the object being replaced,
// streamed in one Get and one Put; a manifest of formats 1 and 2 is read
// whole and written again, framed in a format-3 repository. Concurrent
// updates of one version race (the last write wins); each is a single
// atomic Put.
func (r *Repository) updateHeader(ctx context.Context, id string, fn func(v *Version) error) (*Version, error) {
	if err := checkVersionID(id); err != nil {
		return nil, err
	}
	key := versionKey(id)
	rc, err := r.store.Get(ctx, key, 0, -1)
	if errors.Is(err, objstore.ErrNotExist) {
		return nil, fmt.Errorf("%w: %q", ErrVersionNotFound, id)
	}
	if err != nil {
		return nil, fmt.Errorf("blockdiff: get %s: %w", key, err)
	}
	defer rc.Close()
	br := bufio.NewReaderSize(rc, 64<<10)
	if magic, _ := br.Peek(5); !isFramedManifest(magic) {
		body, release, err := readLegacyManifest(ctx, br)
		if err != nil {
			return nil, fmt.Errorf("blockdiff: read %s: %w", key, err)
		}
		defer release()
		plain, err := r.codec.open(key, body, nil, true)
		if err != nil {
			return nil, fmt.Errorf("blockdiff: %w", err)
		}
		v, err := decodeManifest(plain)
		if err != nil {
			return nil, fmt.Errorf("blockdiff: version %s: %w", id, err)
		}
		return r.finishUpdate(ctx, id, v, fn)
	}
	v, s, err := r.readFramedHeader(br, key)
	if err != nil {
		return nil, fmt.Errorf("blockdiff: version %s: %w", id, err)
	}
	if v.ID != id {
		return nil, fmt.Errorf("blockdiff: manifest %s names itself %q: %w", id, v.ID, ErrCorrupt)
	}
	if err := fn(v); err != nil {
		return nil, err
	}
	head, err := r.sealHeader(key, v, s)
	if err != nil {
		return nil, err
	}
	body := io.MultiReader(bytes.NewReader(head), br)
	if err := r.store.Put(ctx, key, body, int64(len(head))+int64(s.refsBytes)); err != nil {
		return nil, fmt.Errorf("blockdiff: rewrite %s: %w", key, err)
	}
	return v, nil
}

// finishUpdate applies fn to a whole version and writes it back.
func (r *Repository) finishUpdate(ctx context.Context, id string, v *Version, fn func(v *Version) error) (*Version, error) {
	if v.ID != id {
		return nil, fmt.Errorf("blockdiff: manifest %s names itself %q: %w", id, v.ID, ErrCorrupt)
	}
	if err := fn(v); err != nil {
		return nil, err
	}
	if err := r.putVersion(ctx, v); err != nil {
		if errors.Is(err, objstore.ErrNotExist) {
			return nil, fmt.Errorf("%w: %q", ErrVersionNotFound, id)
		}
		return nil, err
	}
	return v, nil
}
