package transport

import (
	"bytes"
	"io"
	"math/rand/v2"
	"testing"
)

func TestChunkedRoundTrip(t *testing.T) {
	r := rand.NewChaCha8([32]byte{3})
	random := make([]byte, 5*ChunkSize+123)
	r.Read(random)
	text := bytes.Repeat([]byte("zfs send stream, compressible "), 200000)
	mixed := append(append(append([]byte{}, text[:3*ChunkSize]...), random[:20*ChunkSize/10]...), text...)
	for name, data := range map[string][]byte{"empty": nil, "random": random, "text": text, "mixed": mixed, "small": []byte("x")} {
		var wire bytes.Buffer
		cw, err := newChunkWriter(&wire)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := cw.ReadFrom(bytes.NewReader(data)); err != nil {
			t.Fatal(err)
		}
		wireLen := wire.Len()
		cr, err := newChunkReader(&wire)
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(cr)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !bytes.Equal(got, data) {
			t.Fatalf("%s: round trip differs", name)
		}
		t.Logf("%s: %d -> %d bytes (%d zstd chunks, %d raw)", name, len(data), wireLen, cw.Zstd, cw.Raw)
		if name == "random" && cw.Zstd != 0 {
			t.Errorf("random data compressed: %d zstd chunks", cw.Zstd)
		}
		if name == "random" && cw.Raw > 1 && wireLen > len(data)+int(cw.Raw)*5 {
			t.Errorf("random data grew: %d", wireLen)
		}
		if name == "text" && wireLen > len(data)/10 {
			t.Errorf("text not compressed: %d", wireLen)
		}
	}
}

func TestChunkedTruncated(t *testing.T) {
	var wire bytes.Buffer
	cw, _ := newChunkWriter(&wire)
	cw.ReadFrom(bytes.NewReader(bytes.Repeat([]byte("abc"), ChunkSize)))
	b := wire.Bytes()
	for _, cut := range []int{1, 3, 5, 100, len(b) - 1} {
		cr, _ := newChunkReader(bytes.NewReader(b[:cut]))
		if _, err := io.ReadAll(cr); err == nil {
			t.Errorf("stream cut at %d read without error", cut)
		}
	}
}

// FuzzChunkReader feeds arbitrary wire bytes to the decoder: errors, never
// panics or unbounded allocations.
func FuzzChunkReader(f *testing.F) {
	var wire bytes.Buffer
	cw, _ := newChunkWriter(&wire)
	cw.ReadFrom(bytes.NewReader(bytes.Repeat([]byte("abcd"), 1000)))
	f.Add(wire.Bytes())
	f.Add([]byte{0, 0, 0, 0, 1, 'x'})
	f.Add([]byte{1, 0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		cr, err := newChunkReader(bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, io.LimitReader(cr, 64<<20))
		cr.Close()
	})
}

// BenchmarkChunkedRandom measures the chunked encoder on incompressible data.
func BenchmarkChunkedRandom(b *testing.B) {
	r := rand.NewChaCha8([32]byte{4})
	data := make([]byte, 64<<20)
	r.Read(data)
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		cw, _ := newChunkWriter(io.Discard)
		cw.ReadFrom(bytes.NewReader(data))
	}
}
