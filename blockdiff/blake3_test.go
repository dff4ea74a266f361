package blockdiff

import (
	"bytes"
	"testing"

	"github.com/klauspost/compress/zstd"
	zeebo "github.com/zeebo/blake3"
)

// TestHashMatchesReferenceBLAKE3 pins object IDs across BLAKE3
// implementations: cairn hashes with lukechampine.com/blake3 (its AVX-512
// code), repositories written before with github.com/zeebo/blake3. Every
// ID, keyed or not, must come out the same at sizes around the chunk (1 KiB)
// and SIMD-batch (16 KiB) boundaries and at a whole 4 MiB block.
func TestHashMatchesReferenceBLAKE3(t *testing.T) {
	key := bytes.Repeat([]byte{0x5a}, masterKeySize)
	plainC, err := newCodec(nil, zstd.SpeedFastest, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer plainC.close()
	keyedC, err := newCodec(key, zstd.SpeedFastest, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer keyedC.close()
	data := make([]byte, 4<<20)
	for i := range data {
		data[i] = byte(i*131 + i>>9)
	}
	for _, n := range []int{0, 1, 1023, 1024, 1025, 16<<10 - 1, 16 << 10, 16<<10 + 1, 65 << 10, 1<<20 + 7, 4 << 20} {
		p := data[:n]
		if got, want := plainC.hash(p), ID(zeebo.Sum256(p)); got != want {
			t.Errorf("%d bytes: ID %s, reference BLAKE3 %s", n, got, want)
		}
		h, err := zeebo.NewKeyed(key[32:])
		if err != nil {
			t.Fatal(err)
		}
		_, _ = h.Write(p)
		var want ID
		h.Sum(want[:0])
		if got := keyedC.hash(p); got != want {
			t.Errorf("%d bytes, keyed: ID %s, reference BLAKE3 %s", n, got, want)
		}
	}
}
