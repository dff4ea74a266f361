package blockdiff

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"math"

	"github.com/cairn-backup/cairn/internal/zstdenc"
	"github.com/klauspost/compress/zstd"
	"lukechampine.com/blake3"
)

// Header flags of a stored object (the first byte of its body, FORMAT.md).
const (
	flagZstd   byte = 1 << 0 // payload is a zstd frame
	flagAESGCM byte = 1 << 1 // payload is nonce || AES-256-GCM(ciphertext || tag)
	knownFlags      = flagZstd | flagAESGCM
	nonceSize       = 12
	tagSize         = 16
)

// maxMetaSize bounds the decoded size of a manifest or index segment, so that a
// corrupt or hostile object cannot make a reader allocate without limit.
const maxMetaSize = 256 << 20

// ID names a data object: the BLAKE3-256 hash of the block's plaintext, keyed
// with the repository's ID key when the repository is encrypted.
type ID [32]byte

// String returns the ID in lower-case hex, as it appears in object keys.
func (id ID) String() string { return hex.EncodeToString(id[:]) }

// ParseID parses the 64-hex-digit form of an ID.
func ParseID(s string) (ID, error) {
	var id ID
	if len(s) != 2*len(id) {
		return id, fmt.Errorf("blockdiff: bad object ID %q: want %d hex digits", s, 2*len(id))
	}
	if _, err := hex.Decode(id[:], []byte(s)); err != nil {
		return id, fmt.Errorf("blockdiff: bad object ID %q: %w", s, err)
	}
	return id, nil
}

// dataKey is the store key of a data object; the two-digit fan-out keeps file
// system directories and S3 listings small.
func dataKey(id ID) string {
	h := id.String()
	return "data/" + h[:2] + "/" + h
}

// codec holds the transforms of one repository: hashing, zstd and, when
// encrypted, AES-256-GCM. All methods are safe for concurrent use.
type codec struct {
	enc     *zstdenc.Encoder
	dataDec *zstd.Decoder // bounded by the largest block
	metaDec *zstd.Decoder // bounded by maxMetaSize
	aead    cipher.AEAD   // nil when the repository is not encrypted
	idKey   []byte        // nil when the repository is not encrypted
}

// newCodec builds the codec; masterKey is nil for an unencrypted repository.
func newCodec(masterKey []byte, level zstd.EncoderLevel, concurrency int) (*codec, error) {
	c := &codec{}
	var err error
	// Frames without a checksum: the block ID already checks the plaintext
	// end to end.
	c.enc, err = zstdenc.New(level, concurrency)
	if err != nil {
		return nil, fmt.Errorf("blockdiff: zstd encoder: %w", err)
	}
	c.dataDec, err = zstd.NewReader(nil, zstd.WithDecoderMaxMemory(MaxBlockSize),
		zstd.WithDecoderConcurrency(0))
	if err != nil {
		return nil, fmt.Errorf("blockdiff: zstd decoder: %w", err)
	}
	c.metaDec, err = zstd.NewReader(nil, zstd.WithDecoderMaxMemory(maxMetaSize),
		zstd.WithDecoderConcurrency(1))
	if err != nil {
		return nil, fmt.Errorf("blockdiff: zstd decoder: %w", err)
	}
	if masterKey != nil {
		if len(masterKey) != masterKeySize {
			return nil, fmt.Errorf("blockdiff: master key is %d bytes, want %d: %w", len(masterKey), masterKeySize, ErrCorrupt)
		}
		block, err := aes.NewCipher(masterKey[:32])
		if err != nil {
			return nil, fmt.Errorf("blockdiff: aes: %w", err)
		}
		if c.aead, err = cipher.NewGCM(block); err != nil {
			return nil, fmt.Errorf("blockdiff: gcm: %w", err)
		}
		c.idKey = append([]byte(nil), masterKey[32:]...)
	}
	return c, nil
}

// close releases the zstd workers.
func (c *codec) close() {
	c.enc.Close()
	c.dataDec.Close()
	c.metaDec.Close()
}

// hash returns the ID of a block's plaintext.
func (c *codec) hash(plain []byte) ID {
	if c.idKey == nil {
		return blake3.Sum256(plain)
	}
	h := blake3.New(len(ID{}), c.idKey) // 32 bytes: checked in newCodec
	_, _ = h.Write(plain)
	var id ID
	h.Sum(id[:0])
	return id
}

// headerLen is the length of an object's header, before its payload: the
// flags byte and, when encrypted, the nonce.
func (c *codec) headerLen() int {
	if c.aead != nil {
		return 1 + nonceSize
	}
	return 1
}

// sealSize is the capacity seal needs for a plaintext of n bytes without
// reallocating: header, nonce, tag and zstd's worst-case expansion.
func sealSize(n int) int { return n + n/128 + 1 + nonceSize + tagSize + 1024 }

// seal encodes plain as the body of the object stored under key, appending to
// dst[:0] (whose capacity is reused when large enough). zstd is kept only when
// it makes the payload smaller, and not tried at all on data whose sampled
// byte entropy says it is already compressed or random.
func (c *codec) seal(dst []byte, key string, plain []byte, compress bool) []byte {
	hdrLen := c.headerLen()
	out := append(dst[:0], make([]byte, hdrLen)...)
	var flags byte
	if compress && len(plain) >= 64<<10 && sampledEntropy(plain) > 7.9 {
		compress = false // encoding random data costs most of a backup's CPU for nothing
	}
	if compress {
		var err error
		if out, err = c.enc.Compress(out, plain); err == nil && len(out)-hdrLen < len(plain) {
			flags |= flagZstd
		} else {
			out = out[:hdrLen] // stored as it is: raw data is valid too
		}
	}
	if c.aead == nil {
		if flags&flagZstd == 0 {
			out = append(out, plain...)
		}
		out[0] = flags
		return out
	}
	// Encrypt in place behind the header: the zstd frame over itself, or
	// the plaintext straight from its own buffer (no copy into out first).
	src := out[hdrLen:]
	if flags&flagZstd == 0 {
		src = plain
	}
	flags |= flagAESGCM
	out[0] = flags
	nonce := out[1:hdrLen]
	_, _ = rand.Read(nonce) // crypto/rand.Read never fails (Go 1.24+)
	into := out[hdrLen:hdrLen]
	inPlace := cap(into) >= len(src)+tagSize // Seal appends to into without allocating
	sealed := c.aead.Seal(into, nonce, src, aad(flags, key))
	if inPlace {
		return out[:hdrLen+len(sealed)]
	}
	return append(out[:hdrLen], sealed...)
}

// aad binds a ciphertext to its header byte and its key, so that objects cannot
// be swapped or their flags altered without detection.
func aad(flags byte, key string) []byte {
	return append([]byte{flags}, key...)
}

// open decodes the body of the object stored under key, checking every layer.
// body may be overwritten. meta selects the decoder bound for manifests and
// index segments instead of blocks.
func (c *codec) open(key string, body []byte, dst []byte, meta bool) ([]byte, error) {
	payload, flags, err := c.unseal(key, body)
	if err != nil {
		return nil, err
	}
	if flags&flagZstd == 0 {
		return append(dst[:0], payload...), nil
	}
	return c.decompress(key, payload, dst, meta)
}

// openData is open for a data object without the copy of an uncompressed
// payload: then the plaintext returned is part of body (inPlace), else it is
// decoded into dst[:0].
func (c *codec) openData(key string, body []byte, dst []byte) (plain []byte, inPlace bool, err error) {
	payload, flags, err := c.unseal(key, body)
	if err != nil {
		return nil, false, err
	}
	if flags&flagZstd == 0 {
		return payload, true, nil
	}
	plain, err = c.decompress(key, payload, dst, false)
	return plain, false, err
}

// unseal checks the header of an object's body and decrypts it in place,
// returning the payload (a zstd frame when flags has flagZstd).
func (c *codec) unseal(key string, body []byte) (payload []byte, flags byte, err error) {
	if len(body) < 1 {
		return nil, 0, fmt.Errorf("%s: empty object: %w", key, ErrCorrupt)
	}
	flags = body[0]
	if flags&^knownFlags != 0 {
		return nil, 0, fmt.Errorf("%s: unknown transform flags %#02x: %w", key, flags, ErrUnsupportedFormat)
	}
	payload = body[1:]
	if (flags&flagAESGCM != 0) != (c.aead != nil) {
		return nil, 0, fmt.Errorf("%s: encryption flag %v does not match the repository: %w", key, flags&flagAESGCM != 0, ErrCorrupt)
	}
	if c.aead != nil {
		if len(payload) < nonceSize+tagSize {
			return nil, 0, fmt.Errorf("%s: encrypted object too short: %w", key, ErrCorrupt)
		}
		nonce, ct := payload[:nonceSize], payload[nonceSize:]
		plain, err := c.aead.Open(ct[:0], nonce, ct, aad(flags, key))
		if err != nil {
			return nil, 0, fmt.Errorf("%s: authentication failed: %w", key, ErrCorrupt)
		}
		payload = plain
	}
	return payload, flags, nil
}

// decompress decodes a zstd payload into dst[:0].
func (c *codec) decompress(key string, payload, dst []byte, meta bool) ([]byte, error) {
	dec := c.dataDec
	if meta {
		dec = c.metaDec
	}
	out, err := dec.DecodeAll(payload, dst[:0])
	if err != nil {
		return nil, fmt.Errorf("%s: zstd: %v: %w", key, err, ErrCorrupt)
	}
	return out, nil
}

// sampledEntropy estimates the Shannon entropy, in bits per byte, of 16
// windows of 2 KiB spread over b. Uniformly random or already compressed data
// scores close to 8; text scores about 4.5 and zero-padded data far less.
func sampledEntropy(b []byte) float64 {
	const windows, width = 16, 2 << 10
	var hist [256]int
	step := (len(b) - width) / (windows - 1)
	for w := range windows {
		for _, c := range b[w*step : w*step+width] {
			hist[c]++
		}
	}
	const total = windows * width
	var h float64
	for _, n := range hist {
		if n > 0 {
			p := float64(n) / total
			h -= p * math.Log2(p)
		}
	}
	return h
}
