package directio

import (
	"os"
	"path/filepath"
	"testing"
	"unsafe"
)

func TestAligned(t *testing.T) {
	for _, off := range []int{0, 1, 13, Align, Align + 7} {
		b := Aligned(3*Align, off)
		if len(b) != 0 || cap(b) < 3*Align {
			t.Fatalf("off %d: len %d cap %d", off, len(b), cap(b))
		}
		if (uintptr(unsafe.Pointer(unsafe.SliceData(b)))+uintptr(off))%Align != 0 {
			t.Fatalf("byte %d is not aligned", off)
		}
	}
	if !IsAligned(Aligned(Align, 0)[:1]) || IsAligned(Aligned(Align, 0)[:2][1:]) {
		t.Fatal("IsAligned is wrong")
	}
}

// TestOpenWritesAround writes an aligned block through Open's descriptor
// and reads it back through the page cache.
func TestOpenWritesAround(t *testing.T) {
	p := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(p, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	f := Open(p)
	if f == nil {
		t.Skipf("no O_DIRECT for %s here", p)
	}
	defer f.Close()
	b := Aligned(Align, 0)[:Align]
	for i := range b {
		b[i] = byte(i)
	}
	if _, err := f.WriteAt(b, Align); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(p)
	if err != nil || len(got) != 2*Align || got[Align+5] != 5 || got[5] != 0 {
		t.Fatalf("read back %d bytes, %v", len(got), err)
	}
}
