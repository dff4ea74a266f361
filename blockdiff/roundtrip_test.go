package blockdiff

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/cairn-backup/cairn/objstore"
)

// testImages are the byte-for-byte round-trip cases of the issue.
func testImages() map[string][]byte {
	mixed := make([]byte, 0, 12*testBS+777)
	mixed = append(mixed, randBytes(1, testBS)...)
	mixed = append(mixed, make([]byte, 2*testBS)...)
	mixed = append(mixed, textBytes(2, 3*testBS)...)
	mixed = append(mixed, mixed[:testBS]...) // a duplicate block
	mixed = append(mixed, randBytes(3, 5*testBS+777)...)
	return map[string][]byte{
		"empty":     {},
		"one-byte":  {0x5a},
		"unaligned": randBytes(4, 3*testBS+123),
		"all-zero":  make([]byte, 4*testBS),
		"random":    randBytes(5, 5*testBS),
		"text":      textBytes(6, 4*testBS+1),
		"mixed":     mixed,
	}
}

// roundTrips backs up every test image from a file and restores it.
func roundTrips(t *testing.T, s objstore.Store, pass string) {
	r := newRepo(t, s, pass)
	for name, img := range testImages() {
		t.Run(name, func(t *testing.T) {
			src, err := OpenFileSource(writeFile(t, img))
			if err != nil {
				t.Fatal(err)
			}
			defer src.Close()
			v, err := r.Backup(context.Background(), src, BackupOptions{Volume: name})
			if err != nil {
				t.Fatal(err)
			}
			if got := restoreBytes(t, r, v.ID); !bytes.Equal(got, img) {
				t.Fatalf("restored %d bytes differ from the %d-byte image", len(got), len(img))
			}
			wantBlocks := int64((len(img) + testBS - 1) / testBS)
			if v.Stats.BlocksTotal != wantBlocks || v.Size != int64(len(img)) {
				t.Fatalf("blocks %d size %d, want %d %d", v.Stats.BlocksTotal, v.Size, wantBlocks, len(img))
			}
		})
	}
}

func TestRoundTripMem(t *testing.T)       { roundTrips(t, openStore(t, "mem"), "") }
func TestRoundTripFile(t *testing.T)      { roundTrips(t, openStore(t, "file"), "") }
func TestRoundTripEncrypted(t *testing.T) { roundTrips(t, openStore(t, "mem"), "correct horse") }

// TestSparseSource checks that holes are skipped unread and restored as holes.
func TestSparseSource(t *testing.T) {
	r := newRepo(t, openStore(t, "mem"), "")
	p := filepath.Join(t.TempDir(), "sparse")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	size := int64(64 * testBS)
	data := randBytes(9, testBS)
	for _, blk := range []int64{3, 40} {
		if _, err := f.WriteAt(data, blk*testBS); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	f.Close()
	src, err := OpenFileSource("file://" + p)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	v, err := r.Backup(context.Background(), src, BackupOptions{Volume: "sparse"})
	if err != nil {
		t.Fatal(err)
	}
	want, _ := os.ReadFile(p)
	if v.Stats.BytesRead > 2*testBS+2*4096 || v.Stats.BlocksSparse != 62 || v.Stats.BlocksNew != 1 {
		t.Fatalf("holes were read or stored: %+v", v.Stats)
	}
	out := filepath.Join(t.TempDir(), "out")
	if err := r.RestoreFile(context.Background(), v.ID, out, RestoreFileOptions{}); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(out)
	if !bytes.Equal(got, want) {
		t.Fatal("sparse image restored wrong")
	}
	var st syscall.Stat_t
	if err := syscall.Stat(out, &st); err != nil {
		t.Fatal(err)
	}
	if st.Blocks*512 > 4*testBS {
		t.Fatalf("restored file is not sparse: %d bytes allocated", st.Blocks*512)
	}
}
