// Package bench holds cairn's benchmarks and the side-by-side comparisons with
// its peers. Nothing here runs under `go test` without -bench: the images are
// large and generated on first use.
//
// Run (from the module root):
//
//	go test ./bench -run '^$' -bench . -benchtime 1x -timeout 2h
//
// CAIRN_BENCH_DIR chooses where images and repositories go (default: the
// system temporary directory); images are kept there between runs.
package bench

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
)

// UnitSize is the granularity of the generated images' content kinds.
const UnitSize = 4 << 20

// ImageSpec describes a deterministic test image.
type ImageSpec struct {
	Size      int64  // bytes; a multiple of UnitSize
	DataEvery int    // 1: every unit may hold data; N: only every Nth (the rest are holes)
	Seed      uint64 // changes every byte
}

// Unit kinds of a mixed image, in the proportions kindOf draws them.
const (
	kindHole   = iota // never written: a hole in the file
	kindZero          // zeros written explicitly
	kindRandom        // incompressible
	kindText          // compressible, text-like
	kindDup           // a copy of an earlier unit
	kindMixed         // half text, half random, split off the block grid
)

// kindOf draws unit i's kind: 10% holes, 10% zeros, 30% random, 30% text,
// 10% duplicates, 10% mixed.
func (s ImageSpec) kindOf(i int64) int {
	if s.DataEvery > 1 && i%int64(s.DataEvery) != 0 {
		return kindHole
	}
	r := rand.New(rand.NewPCG(s.Seed, uint64(i)))
	switch p := r.IntN(100); {
	case p < 10:
		return kindHole
	case p < 20:
		return kindZero
	case p < 50:
		return kindRandom
	case p < 80:
		return kindText
	case p < 90 && i > 0:
		return kindDup
	default:
		return kindMixed
	}
}

// unit fills buf with unit i's content; it returns false for a hole.
func (s ImageSpec) unit(i int64, buf []byte) bool {
	switch s.kindOf(i) {
	case kindHole:
		return false
	case kindZero:
		clear(buf)
	case kindRandom:
		fillRandom(buf, s.Seed, uint64(i))
	case kindText:
		fillText(buf, s.Seed, uint64(i))
	case kindDup:
		r := rand.New(rand.NewPCG(s.Seed^0xd00d, uint64(i)))
		j := i - 1 - r.Int64N(min(i, 64))
		if !s.unit(j, buf) {
			fillRandom(buf, s.Seed, uint64(i))
		}
	case kindMixed:
		cut := len(buf)/2 + 4321
		fillText(buf[:cut], s.Seed, uint64(i))
		fillRandom(buf[cut:], s.Seed, uint64(i))
	}
	return true
}

func fillRandom(b []byte, seed, i uint64) {
	var key [32]byte
	for k := range 8 {
		key[k], key[8+k] = byte(seed>>(8*k)), byte(i>>(8*k))
	}
	_, _ = rand.NewChaCha8(key).Read(b)
}

// fillText writes words from a pseudo-English vocabulary: zstd shrinks it
// about 3x, like logs or SQL dumps.
func fillText(b []byte, seed, i uint64) {
	r := rand.New(rand.NewPCG(seed, i^0x7e47))
	for n := 0; n < len(b); {
		w := vocabulary[r.IntN(len(vocabulary))]
		n += copy(b[n:], w)
	}
}

var vocabulary = func() []string {
	r := rand.New(rand.NewPCG(1, 2))
	const letters = "etaoinshrdlucmfwypvbgkjqxz"
	out := make([]string, 2048)
	for i := range out {
		w := make([]byte, 2+r.IntN(9))
		for k := range w {
			w[k] = letters[min(r.IntN(len(letters)), r.IntN(len(letters)))]
		}
		sep := " "
		if r.IntN(12) == 0 {
			sep = "\n"
		}
		out[i] = string(w) + sep
	}
	return out
}()

// Generate writes the image to path, unless path+".done" says an identical
// image is already there.
func Generate(path string, s ImageSpec) error {
	stamp, _ := json.Marshal(s)
	if old, err := os.ReadFile(path + ".done"); err == nil && string(old) == string(stamp) {
		return nil
	}
	os.Remove(path + ".done")
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("bench: create image: %w", err)
	}
	buf := make([]byte, UnitSize)
	for i := range s.Size / UnitSize {
		if !s.unit(i, buf) {
			continue
		}
		if _, err := f.WriteAt(buf, i*UnitSize); err != nil {
			f.Close()
			return fmt.Errorf("bench: write image: %w", err)
		}
	}
	if err := f.Truncate(s.Size); err != nil {
		f.Close()
		return fmt.Errorf("bench: truncate image: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("bench: close image: %w", err)
	}
	return os.WriteFile(path+".done", stamp, 0o644)
}

// Change writes a copy of src to dst with 64 KiB of new random data at the
// start of every 100th unit (1% of the units), and returns the rbd diff JSON
// hints that describe the change.
func Change(src, dst string, s ImageSpec) ([]byte, error) {
	in, err := os.Open(src)
	if err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	defer out.Close()
	if _, err := out.ReadFrom(in); err != nil { // copy_file_range where possible
		return nil, fmt.Errorf("bench: copy image: %w", err)
	}
	type extent struct {
		Offset int64  `json:"offset"`
		Length int64  `json:"length"`
		Exists string `json:"exists"`
	}
	hints := []extent{}
	buf := make([]byte, 64<<10)
	for i := int64(37); i < s.Size/UnitSize; i += 100 {
		fillRandom(buf, s.Seed^0xc4a46e, uint64(i))
		if _, err := out.WriteAt(buf, i*UnitSize); err != nil {
			return nil, fmt.Errorf("bench: change image: %w", err)
		}
		hints = append(hints, extent{Offset: i * UnitSize, Length: int64(len(buf)), Exists: "true"})
	}
	return json.Marshal(hints)
}
