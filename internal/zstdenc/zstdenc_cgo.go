//go:build cgo

package zstdenc

import (
	"fmt"

	czstd "github.com/DataDog/zstd"
	"github.com/klauspost/compress/zstd"
)

const implName = "libzstd (cgo)"

// impl keeps up to concurrency C contexts for reuse: a context's tables are
// allocated once, and a busy one is never shared.
type impl struct {
	level int
	free  chan czstd.Ctx
}

func newImpl(level zstd.EncoderLevel, concurrency int) (impl, error) {
	cLevel := map[zstd.EncoderLevel]int{
		zstd.SpeedFastest: 1, zstd.SpeedDefault: 3, zstd.SpeedBetterCompression: 7, zstd.SpeedBestCompression: 11,
	}[level]
	return impl{level: cLevel, free: make(chan czstd.Ctx, concurrency)}, nil
}

func (i impl) compress(dst, src []byte) ([]byte, error) {
	if need := len(dst) + Bound(len(src)); cap(dst) < need {
		dst = append(make([]byte, 0, need), dst...)
	}
	var ctx czstd.Ctx
	select {
	case ctx = <-i.free:
	default:
		ctx = czstd.NewCtx() // freed by its finalizer when dropped
	}
	frame, err := ctx.CompressLevel(dst[len(dst):cap(dst)], src, i.level)
	select {
	case i.free <- ctx:
	default:
	}
	if err != nil {
		return dst, fmt.Errorf("zstdenc: %w", err)
	}
	out := dst[:len(dst)+len(frame)]
	if len(frame) > 0 && &frame[0] != &out[len(dst)] {
		// The binding allocated (its bound above ours): take the frame.
		out = append(dst, frame...)
	}
	return out, nil
}

func (i impl) close() {
	for {
		select {
		case <-i.free:
		default:
			return
		}
	}
}
