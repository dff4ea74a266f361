package blockdiff

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"sync"

	chunkers "github.com/PlakarKorp/go-cdc-chunkers"
	"github.com/PlakarKorp/go-cdc-chunkers/chunkers/fastcdc"
	"lukechampine.com/blake3"
)

// fastCDCName is the go-cdc-chunkers registration of cairnFastCDC.
const fastCDCName = "cairn-fastcdc"

func init() {
	if err := chunkers.Register(fastCDCName, func() chunkers.ChunkerImplementation { return &cairnFastCDC{} }); err != nil {
		panic("blockdiff: register " + fastCDCName + ": " + err.Error())
	}
}

// cairnFastCDC cuts exactly where go-cdc-chunkers' "fastcdc-v1.0.0" cuts
// (the same gear tables, masks and normalization; TestFastCDCMatchesLibrary
// checks it), with the scan split in two loops over re-sliced data, unrolled
// four times, so that the compiler drops the per-byte bounds and normal-size
// checks.
type cairnFastCDC struct {
	g            *[256]uint64
	maskS, maskL uint64
}

func (c *cairnFastCDC) DefaultOptions() *chunkers.ChunkerOpts {
	return &chunkers.ChunkerOpts{MinSize: DefaultChunker.Min, NormalSize: DefaultChunker.Avg, MaxSize: DefaultChunker.Max}
}

func (c *cairnFastCDC) Validate(o *chunkers.ChunkerOpts) error {
	if o.NormalSize < 64 || o.NormalSize > 1<<30 || o.NormalSize&(o.NormalSize-1) != 0 ||
		o.MinSize < 64 || o.MinSize >= o.NormalSize || o.MaxSize <= o.NormalSize || o.MaxSize > 1<<30 {
		return errors.New("fastcdc: want 64 <= min < avg < max <= 1 GiB, avg a power of two")
	}
	return nil
}

func (c *cairnFastCDC) Setup(o *chunkers.ChunkerOpts) error {
	if err := c.Validate(o); err != nil {
		return err
	}
	b := bits.Len(uint(o.NormalSize)) - 1 // log2 of a power of two
	c.maskS, c.maskL = spacedMask(b+2), spacedMask(b-2)
	c.g = &fastcdc.G
	if o.Key != nil {
		g, err := keyedGear(o.Key)
		if err != nil {
			return err
		}
		c.g = g
	}
	return nil
}

// spacedMask spreads n one bits evenly from the top of a 64-bit word, as
// go-cdc-chunkers' generateSpacedMask does.
func spacedMask(n int) uint64 {
	if n >= 64 {
		return ^uint64(0)
	}
	if n <= 0 {
		return 0
	}
	step := 64 / n
	var m uint64
	for i := range n {
		if pos := 63 - i*step; pos >= 0 {
			m |= 1 << pos
		}
	}
	return m
}

var keyedGears sync.Map // BLAKE3(key) -> *[256]uint64

// keyedGear derives the keyed gear table as go-cdc-chunkers does: the first
// 2048 bytes of BLAKE3-keyed(key, the static table as little-endian
// uint64s)'s output, as 256 little-endian uint64s.
func keyedGear(key []byte) (*[256]uint64, error) {
	ck := blake3.Sum256(key)
	if g, ok := keyedGears.Load(ck); ok {
		return g.(*[256]uint64), nil
	}
	if len(key) != 32 { // blake3.New panics on other lengths
		return nil, fmt.Errorf("fastcdc: the gear key is %d bytes, want 32", len(key))
	}
	h := blake3.New(32, key)
	var b [8]byte
	for _, v := range fastcdc.G {
		binary.LittleEndian.PutUint64(b[:], v)
		_, _ = h.Write(b[:])
	}
	out := make([]byte, 8*256)
	if _, err := io.ReadFull(h.XOF(), out); err != nil {
		return nil, err
	}
	g := new([256]uint64)
	for i := range g {
		g[i] = binary.LittleEndian.Uint64(out[8*i:])
	}
	actual, _ := keyedGears.LoadOrStore(ck, g)
	return actual.(*[256]uint64), nil
}

// Algorithm returns the length of the chunk at the start of data[:n].
func (c *cairnFastCDC) Algorithm(o *chunkers.ChunkerOpts, data []byte, n int) int {
	minSize, normal := o.MinSize, o.NormalSize
	switch {
	case n <= minSize:
		return n
	case n >= o.MaxSize:
		n = o.MaxSize
	case n <= normal:
		normal = n
	}
	// Locals, not fields: the compiler would reload c's fields every byte.
	g, ms, ml := c.g, c.maskS, c.maskL
	var fp uint64
	i := minSize
	d := data[:normal]
	for ; i+4 <= len(d); i += 4 { // unrolled: about a third faster
		b := d[i : i+4 : i+4]
		if fp = fp<<1 + g[b[0]]; fp&ms == 0 {
			return i
		}
		if fp = fp<<1 + g[b[1]]; fp&ms == 0 {
			return i + 1
		}
		if fp = fp<<1 + g[b[2]]; fp&ms == 0 {
			return i + 2
		}
		if fp = fp<<1 + g[b[3]]; fp&ms == 0 {
			return i + 3
		}
	}
	for ; i < len(d); i++ {
		if fp = fp<<1 + g[d[i]]; fp&ms == 0 {
			return i
		}
	}
	d = data[:n]
	for ; i+4 <= len(d); i += 4 {
		b := d[i : i+4 : i+4]
		if fp = fp<<1 + g[b[0]]; fp&ml == 0 {
			return i
		}
		if fp = fp<<1 + g[b[1]]; fp&ml == 0 {
			return i + 1
		}
		if fp = fp<<1 + g[b[2]]; fp&ml == 0 {
			return i + 2
		}
		if fp = fp<<1 + g[b[3]]; fp&ml == 0 {
			return i + 3
		}
	}
	for ; i < len(d); i++ {
		if fp = fp<<1 + g[d[i]]; fp&ml == 0 {
			return i
		}
	}
	return n
}
