package blockdiff

import (
	"bytes"
	"testing"

	"github.com/klauspost/compress/zstd"
)

// FuzzDecodeManifest feeds arbitrary plaintexts to the manifest decoder: it
// must return an error or a version, never panic or allocate without bound.
func FuzzDecodeManifest(f *testing.F) {
	v := &Version{ID: "x", Volume: "v", Kind: KindBlock, Size: 5, Status: StatusValid,
		refs: []Ref{{ID: ID{1}, Length: 3}, {Sparse: true, Length: 2}}}
	good, err := encodeManifest(v)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add(good[:len(good)-1])
	f.Add([]byte("CRNV\x01"))
	f.Fuzz(func(t *testing.T, b []byte) {
		if v, err := decodeManifest(b); err == nil {
			if _, err := encodeManifest(v); err != nil {
				t.Fatal(err)
			}
		}
	})
}

// FuzzDecodeIndex checks the index segment decoder the same way.
func FuzzDecodeIndex(f *testing.F) {
	f.Add(encodeIndex([]indexEntry{{ID: ID{2}, Stored: 10, Length: 20}}))
	f.Add([]byte("CRNI\x01\xff\xff\xff\xff\x0f"))
	f.Fuzz(func(t *testing.T, b []byte) {
		if es, err := decodeIndex(b); err == nil && !bytes.Equal(encodeIndex(es), b) {
			t.Fatal("index does not re-encode to the same bytes")
		}
	})
}

// FuzzOpenObject feeds arbitrary bodies to the object decoder of a plain and
// of an encrypted codec.
func FuzzOpenObject(f *testing.F) {
	plain, err := newCodec(nil, zstd.SpeedFastest, 1)
	if err != nil {
		f.Fatal(err)
	}
	enc, err := newCodec(bytes.Repeat([]byte{7}, masterKeySize), zstd.SpeedFastest, 1)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(plain.seal(nil, "k", textBytes(1, 5000), true))
	f.Add(plain.seal(nil, "k", randBytes(1, 100), true))
	f.Add(enc.seal(nil, "k", textBytes(1, 5000), true))
	f.Add([]byte{flagZstd, 0x28, 0xb5, 0x2f, 0xfd})
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, c := range []*codec{plain, enc} {
			for _, meta := range []bool{false, true} {
				_, _ = c.open("k", bytes.Clone(b), nil, meta)
			}
		}
	})
}

// FuzzParseConfig checks the config parser never panics.
func FuzzParseConfig(f *testing.F) {
	f.Add([]byte(`{"format":"cairn-blockdiff","version":1,"hash":"blake3-256","compression":"zstd","block_size":65536}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		if cfg, err := parseConfig(b); err == nil && cfg.Encryption != nil {
			_, _, _ = unwrapMasterKey(cfg, []byte("pw"))
		}
	})
}

// FuzzParseRBDDiff checks the hints parser never panics.
func FuzzParseRBDDiff(f *testing.F) {
	f.Add([]byte(`[{"offset":0,"length":4194304,"exists":"true"}]`))
	f.Fuzz(func(t *testing.T, b []byte) {
		if hs, err := ParseRBDDiff(bytes.NewReader(b)); err == nil {
			plan := make([]byte, 16)
			markHints(plan, 16*testBS, testBS, hs)
		}
	})
}

func TestCodecRoundTrip(t *testing.T) {
	for _, key := range [][]byte{nil, bytes.Repeat([]byte{9}, masterKeySize)} {
		c, err := newCodec(key, zstd.SpeedFastest, 1)
		if err != nil {
			t.Fatal(err)
		}
		for _, in := range [][]byte{{}, {1}, textBytes(3, 70000), randBytes(3, 70000)} {
			body := c.seal(nil, "data/k", in, true)
			out, err := c.open("data/k", bytes.Clone(body), nil, false)
			if err != nil || !bytes.Equal(out, in) {
				t.Fatalf("round trip of %d bytes: %v", len(in), err)
			}
			if key != nil {
				if _, err := c.open("data/other", bytes.Clone(body), nil, false); err == nil {
					t.Fatal("an object moved to another key still decrypts")
				}
			}
		}
		c.close()
	}
}
