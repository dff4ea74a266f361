package blockdiff

import (
	"bytes"
	"context"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/klauspost/compress/zstd"
)

// TestRestoreWriteback restores a volume larger than a few writeback
// chunks, in a file repository, to a new file and over an existing one
// (zeros written), byte for byte; and checks that the write-out tracker
// starts every byte once whatever order the blocks finish in.
func TestRestoreWriteback(t *testing.T) {
	n := 3*writebackChunk/testBS + 5
	img := make([]byte, 0, n*testBS+999)
	for i := range n {
		switch i % 5 {
		case 0:
			img = append(img, make([]byte, testBS)...)
		case 1, 2:
			img = append(img, textBytes(uint64(i), testBS)...)
		default:
			img = append(img, randBytes(uint64(i), testBS)...)
		}
	}
	img = append(img, randBytes(99, 999)...)
	r := newRepo(t, openStore(t, "file"), "pass")
	v := backupBytes(t, r, "wb", img, BackupOptions{})
	if got := restoreBytes(t, r, v.ID); !bytes.Equal(got, img) {
		t.Fatal("restored bytes differ")
	}
	p := filepath.Join(t.TempDir(), "over")
	if err := os.WriteFile(p, randBytes(7, len(img)+4096), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := r.RestoreFile(context.Background(), v.ID, p, RestoreFileOptions{Overwrite: true}); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, p); !bytes.Equal(got, img) {
		t.Fatal("restored bytes over an existing file differ")
	}

	f, err := os.Create(filepath.Join(t.TempDir(), "wb"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	const blocks = 1000
	offs := make([]int64, blocks)
	for i := range offs {
		offs[i] = int64(i) * (1 << 20)
	}
	wb := newWriteback(f, offs, blocks<<20)
	order := rand.Perm(blocks)
	for k := 0; k < blocks; k += 8 { // finish out of order within windows of 8
		w := order[:0:0]
		for i := k; i < min(k+8, blocks); i++ {
			w = append(w, i)
		}
		rand.Shuffle(len(w), func(a, b int) { w[a], w[b] = w[b], w[a] })
		for _, i := range w {
			wb.written(i)
		}
		if len(wb.ahead) > 8 {
			t.Fatalf("%d blocks held ahead", len(wb.ahead))
		}
	}
	if wb.next != blocks || wb.started != blocks<<20 || len(wb.ahead) != 0 {
		t.Fatalf("next %d started %d ahead %d", wb.next, wb.started, len(wb.ahead))
	}
	var none *writeback
	none.written(3) // a destination that is not a file
}

// TestSealOpenInPlace seals and opens blocks of every kind (compressed or
// not, encrypted or not) into buffers large enough to work in place and
// too small, and checks openData's in-place plaintext.
func TestSealOpenInPlace(t *testing.T) {
	master := randBytes(42, masterKeySize)
	for _, key := range [][]byte{nil, master} {
		c, err := newCodec(key, zstd.SpeedFastest, 1)
		if err != nil {
			t.Fatal(err)
		}
		defer c.close()
		for name, plain := range map[string][]byte{
			"text": textBytes(1, 3*testBS), "random": randBytes(2, 3*testBS), "tiny": {1, 2, 3}, "empty": {},
		} {
			for _, capacity := range []int{0, 10, sealSize(len(plain))} {
				body := c.seal(make([]byte, 0, capacity), "data/k", plain, true)
				again := append([]byte(nil), body...)
				got, inPlace, err := c.openData("data/k", body, nil)
				if err != nil || !bytes.Equal(got, plain) {
					t.Fatalf("encrypted %v, %s, capacity %d: open: %v", key != nil, name, capacity, err)
				}
				if inPlace != (again[0]&flagZstd == 0) {
					t.Fatalf("%s: in place %v with flags %#x", name, inPlace, again[0])
				}
				if got, err := c.open("data/k", again, nil, false); err != nil || !bytes.Equal(got, plain) {
					t.Fatalf("%s: open: %v", name, err)
				}
			}
		}
	}
}
