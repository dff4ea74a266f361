package blockdiff

import (
	"math/rand/v2"
)

// Per-block actions of a backup.
const (
	actRead   byte = iota // read, hash, store when new
	actSparse             // known to be zero (discarded extent): no read, no object
	actCopy               // reference copied from the base without reading
	actVerify             // copied from the base after reading it and checking it matches
)

// blockSpan returns the offset and length of block i of a volume.
func blockSpan(i int, bs, size int64) (int64, int64) {
	off := int64(i) * bs
	return off, min(bs, size-off)
}

// numBlocks is the number of blocks of a volume of size bytes.
func numBlocks(size, bs int64) int { return int((size + bs - 1) / bs) }

// planBlocks decides what to do with every block. Without a base or hints
// every block is read. With both, blocks the hints touch are read (or made
// sparse when a discarded extent covers them whole), the rest are copied from
// the base, and a sample of the copies is verified against the source.
func planBlocks(size, bs int64, base *Version, hints []Extent, verifyPct float64) []byte {
	n := numBlocks(size, bs)
	plan := make([]byte, n)
	if base == nil || hints == nil {
		return plan // all actRead
	}
	for i := range plan {
		off, l := blockSpan(i, bs, size)
		if i < len(base.refs) && base.refs[i].Length == l && off+l <= base.Size {
			plan[i] = actCopy
		}
	}
	markHints(plan, size, bs, hints)
	sampleVerify(plan, verifyPct)
	return plan
}

// markHints turns copied blocks that the hints touch into reads, or into
// sparse blocks when discarded extents cover them entirely.
func markHints(plan []byte, size, bs int64, hints []Extent) {
	touched := make(map[int]bool) // block -> touched by a data extent
	discard := make(map[int]int64)
	for _, h := range hints {
		end := min(h.Offset+h.Length, size)
		for off := h.Offset; off < end; {
			i := int(off / bs)
			blockEnd := min(int64(i+1)*bs, end)
			if h.Exists {
				touched[i] = true
			} else {
				discard[i] += blockEnd - off
			}
			off = blockEnd
		}
	}
	for i, covered := range discard {
		_, l := blockSpan(i, bs, size)
		if covered >= l && !touched[i] {
			plan[i] = actSparse
		} else {
			touched[i] = true
		}
	}
	for i := range touched {
		plan[i] = actRead
	}
}

// sampleVerify marks max(min(n,10), n/1000) of the n copied blocks, or pct
// percent of them when that is more, for verification (Benji's rule).
func sampleVerify(plan []byte, pct float64) {
	var copies []int
	for i, a := range plan {
		if a == actCopy {
			copies = append(copies, i)
		}
	}
	n := len(copies)
	k := max(min(n, 10), n/1000)
	if p := int(float64(n)*pct/100 + 0.999999); pct > 0 && p > k {
		k = min(p, n)
	}
	for j := range k { // partial Fisher-Yates shuffle
		s := j + rand.IntN(n-j)
		copies[j], copies[s] = copies[s], copies[j]
		plan[copies[j]] = actVerify
	}
}
