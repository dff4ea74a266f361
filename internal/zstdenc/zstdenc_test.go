package zstdenc

import (
	"bytes"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"

	"github.com/klauspost/compress/zstd"
	"github.com/stretchr/testify/require"
)

// TestRoundTrip checks what a repository relies on: klauspost's decoder
// (cairn's only one) gives back the exact bytes at every level, the prefix
// of dst survives, and compressible input shrinks.
func TestRoundTrip(t *testing.T) {
	t.Logf("implementation: %s", Implementation())
	dec, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1))
	require.NoError(t, err)
	defer dec.Close()
	text := []byte(strings.Repeat("the quick brown fox jumps over the lazy dog\n", 100000))
	random := make([]byte, 3<<20+17)
	_, _ = rand.NewChaCha8([32]byte{1}).Read(random)
	inputs := map[string][]byte{"empty": {}, "one byte": {7}, "text": text, "random": random}
	for _, level := range []zstd.EncoderLevel{zstd.SpeedFastest, zstd.SpeedDefault, zstd.SpeedBetterCompression, zstd.SpeedBestCompression} {
		enc, err := New(level, 2)
		require.NoError(t, err)
		for name, in := range inputs {
			out, err := enc.Compress([]byte("HDR"), in)
			require.NoError(t, err, "%s at %v", name, level)
			require.Equal(t, "HDR", string(out[:3]), "%s at %v: prefix overwritten", name, level)
			require.LessOrEqual(t, len(out)-3, Bound(len(in)), "%s at %v", name, level)
			got, err := dec.DecodeAll(out[3:], nil)
			require.NoError(t, err, "%s at %v", name, level)
			require.True(t, bytes.Equal(in, got), "%s at %v: round trip differs", name, level)
			if name == "text" {
				require.Less(t, len(out), len(in)/20, "text at %v did not shrink", level)
			}
		}
		enc.Close()
	}
}

// TestCompressReusesCapacity checks that a large enough dst is written in
// place, as the block codec's in-place sealing expects.
func TestCompressReusesCapacity(t *testing.T) {
	enc, err := New(zstd.SpeedFastest, 1)
	require.NoError(t, err)
	defer enc.Close()
	in := bytes.Repeat([]byte("abcdefgh"), 1<<16)
	dst := make([]byte, 5, 5+Bound(len(in)))
	out, err := enc.Compress(dst, in)
	require.NoError(t, err)
	require.Same(t, &dst[0], &out[0])
}

// TestConcurrent compresses from more goroutines than the encoder expects;
// run with -race.
func TestConcurrent(t *testing.T) {
	enc, err := New(zstd.SpeedFastest, 2)
	require.NoError(t, err)
	defer enc.Close()
	dec, err := zstd.NewReader(nil)
	require.NoError(t, err)
	defer dec.Close()
	var wg sync.WaitGroup
	for g := range 6 {
		wg.Go(func() {
			in := bytes.Repeat([]byte{byte(g), 'x', 'y'}, 100000+g)
			for range 20 {
				out, err := enc.Compress(nil, in)
				if err != nil {
					t.Error(err)
					return
				}
				got, err := dec.DecodeAll(out, nil)
				if err != nil || !bytes.Equal(got, in) {
					t.Errorf("goroutine %d: round trip failed: %v", g, err)
					return
				}
			}
		})
	}
	wg.Wait()
}

func TestBadLevel(t *testing.T) {
	_, err := New(zstd.EncoderLevel(9), 1)
	require.ErrorContains(t, err, "unknown level")
}
