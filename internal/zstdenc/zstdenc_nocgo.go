//go:build !cgo

package zstdenc

import (
	"fmt"

	"github.com/klauspost/compress/zstd"
)

const implName = "klauspost/compress (pure Go)"

type impl struct{ enc *zstd.Encoder }

func newImpl(level zstd.EncoderLevel, concurrency int) (impl, error) {
	// No frame CRC: callers check the plaintext end to end themselves.
	// Not WithLowerEncoderMem: its history buffer holds the window plus one
	// 128 KiB block, so past the first MiB of an object every block slides
	// the whole 1 MiB window down (8 bytes copied per byte compressed); the
	// default buffer is twice the window.
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(level),
		zstd.WithEncoderConcurrency(concurrency),
		zstd.WithWindowSize(1<<20), zstd.WithEncoderCRC(false))
	if err != nil {
		return impl{}, fmt.Errorf("zstdenc: %w", err)
	}
	return impl{enc}, nil
}

func (i impl) compress(dst, src []byte) ([]byte, error) { return i.enc.EncodeAll(src, dst), nil }

func (i impl) close() { i.enc.Close() }
