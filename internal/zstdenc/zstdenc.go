// Package zstdenc compresses whole buffers into standard zstd frames as fast
// as the build allows. Built with cgo (the default wherever a C compiler is
// found) it runs the reference C library, bundled by github.com/DataDog/zstd
// (no system library needed); without cgo it runs klauspost/compress. On the
// text-like data of bench/ the C library's level 1 compresses 1.5 times as
// many bytes per CPU-second as klauspost's fastest level, for a ratio 5%
// worse (0.36 against 0.34): most of a block backup's CPU is compression.
//
// Only compression lives here. Frames are decoded with klauspost's decoder
// everywhere, so the C code never sees a stored (possibly hostile) object,
// and either build reads what the other wrote.
package zstdenc

import (
	"fmt"

	"github.com/klauspost/compress/zstd"
)

// Encoder compresses buffers at one level. It is safe for concurrent use.
type Encoder struct{ impl }

// New returns an Encoder for level (klauspost's levels name the speeds; with
// cgo, SpeedFastest is C level 1, SpeedDefault 3, SpeedBetterCompression 7
// and SpeedBestCompression 11, their documented equivalents). concurrency is
// how many goroutines are expected to compress at once.
func New(level zstd.EncoderLevel, concurrency int) (*Encoder, error) {
	if level < zstd.SpeedFastest || level > zstd.SpeedBestCompression {
		return nil, errLevel(level)
	}
	i, err := newImpl(level, max(concurrency, 1))
	if err != nil {
		return nil, err
	}
	return &Encoder{i}, nil
}

// Compress appends the zstd frame of src to dst and returns the extended
// slice. The frame records src's size and no checksum. An error (the C
// library out of memory) leaves dst as it was.
func (e *Encoder) Compress(dst, src []byte) ([]byte, error) { return e.compress(dst, src) }

// Close releases the encoder's resources; it must not be used afterwards.
func (e *Encoder) Close() { e.close() }

// Implementation names the compressor this build runs, for benchmarks.
func Implementation() string { return implName }

// Bound is the largest frame Compress can produce for n bytes of input.
func Bound(n int) int {
	// libzstd's ZSTD_COMPRESSBOUND; klauspost's frames for incompressible
	// input are smaller (raw blocks plus 3 bytes each).
	margin := 0
	if n < 128<<10 {
		margin = (128<<10 - n) >> 11
	}
	return n + n>>8 + margin
}

func errLevel(l zstd.EncoderLevel) error {
	return fmt.Errorf("zstdenc: unknown level %d (want %d to %d)", int(l), int(zstd.SpeedFastest), int(zstd.SpeedBestCompression))
}
