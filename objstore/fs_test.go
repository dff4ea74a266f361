package objstore_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/objstore"
	"github.com/cairn-backup/cairn/objstore/storetest"
)

func openFS(t *testing.T, dir string) objstore.Store {
	t.Helper()
	s, err := objstore.Open(t.Context(), "file://"+dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestFSConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) objstore.Store { return openFS(t, t.TempDir()) })
}

func TestFSLayout(t *testing.T) {
	dir := t.TempDir()
	s := openFS(t, filepath.Join(dir, "new", "root"))
	ctx := t.Context()
	if err := s.Put(ctx, "data/ab/cdef", strings.NewReader("x"), 1); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "new/root/data/ab/cdef"))
	if err != nil || string(b) != "x" {
		t.Fatalf("the key's file: %q, %v", b, err)
	}
	// Leftover temporary files (a crash mid-Put) are not objects.
	if err := os.WriteFile(filepath.Join(dir, "new/root/data/ab/.cairn-tmp-123"), []byte("partial"), 0o600); err != nil {
		t.Fatal(err)
	}
	var keys []string
	for info, err := range s.List(ctx, "") {
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, info.Key)
	}
	if !slices.Equal(keys, []string{"data/ab/cdef"}) {
		t.Fatalf("List = %q", keys)
	}
	if _, err := s.Stat(ctx, "data/ab/.cairn-tmp-123"); !errors.Is(err, objstore.ErrInvalidKey) {
		t.Fatalf("Stat of a temp file = %v, want ErrInvalidKey", err)
	}
	// A key cannot be both an object and a folder.
	err = s.Put(ctx, "data/ab/cdef/g", strings.NewReader("y"), 1)
	if err == nil || !strings.Contains(err.Error(), `"data/ab/cdef" is an object`) {
		t.Fatalf("Put under an object = %v", err)
	}
	err = s.Put(ctx, "data/ab", strings.NewReader("y"), 1)
	if err == nil || !strings.Contains(err.Error(), "folder of other keys") {
		t.Fatalf("Put over a folder = %v", err)
	}
	err = s.Create(ctx, "data/ab", strings.NewReader("y"), 1)
	if err == nil || errors.Is(err, objstore.ErrExist) || !strings.Contains(err.Error(), "folder of other keys") {
		t.Fatalf("Create over a folder = %v", err)
	}
	if _, err := s.Stat(ctx, "data/ab"); !errors.Is(err, objstore.ErrNotExist) {
		t.Fatalf("Stat of a folder = %v, want ErrNotExist", err)
	}
	if err := s.Delete(ctx, "data/ab"); err != nil {
		t.Fatalf("Delete of a folder = %v, want nil (no such object)", err)
	}
	// Delete removes the folders it empties, but not the root.
	os.Remove(filepath.Join(dir, "new/root/data/ab/.cairn-tmp-123"))
	if err := s.Delete(ctx, "data/ab/cdef"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "new/root/data")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("empty folders left: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "new/root")); err != nil {
		t.Fatalf("root removed: %v", err)
	}
}

func TestFSOpenErrors(t *testing.T) {
	f := filepath.Join(t.TempDir(), "file")
	os.WriteFile(f, nil, 0o600)
	for _, u := range []string{"file://host/x", "file://user@/x", "file:///x?y=1", "file:relative", "file://", "file://" + f} {
		if s, err := objstore.Open(t.Context(), u); err == nil {
			s.Close()
			t.Errorf("Open(%q): no error", u)
		}
	}
}

// TestFSDeleteRacesPut checks that a Delete emptying a folder does not make a
// concurrent Put into that folder fail.
func TestFSDeleteRacesPut(t *testing.T) {
	s := openFS(t, t.TempDir())
	ctx := t.Context()
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := range 200 {
				k := fmt.Sprintf("d/%d/%d", i%3, w)
				if err := s.Put(ctx, k, strings.NewReader("v"), 1); err != nil {
					t.Error(err)
					return
				}
				if err := s.Delete(ctx, k); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
}

// FuzzValidateKey checks that no key makes key validation or the fs backend
// panic or escape its root.
func FuzzValidateKey(f *testing.F) {
	for _, k := range append(slices.Clone(storetest.BadKeys), "a", "a/b", "ü/日本", "..a", "a..", ".a/b.") {
		f.Add(k)
	}
	root := f.TempDir()
	s, err := objstore.Open(f.Context(), "file://"+filepath.Join(root, "store"))
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, key string) {
		err := objstore.ValidateKey(key)
		if err != nil && !errors.Is(err, objstore.ErrInvalidKey) {
			t.Fatalf("ValidateKey(%q) = %v, not ErrInvalidKey", key, err)
		}
		perr := s.Put(t.Context(), key, strings.NewReader("x"), 1)
		if err != nil && perr == nil {
			t.Fatalf("Put accepted the invalid key %q", key)
		}
		if perr == nil {
			s.Delete(t.Context(), key)
		}
		ents, _ := os.ReadDir(root)
		if len(ents) != 1 {
			t.Fatalf("key %q wrote outside the store's root: %v", key, ents)
		}
	})
}

// TestFSListMany lists 30,720 objects in 256 fan-out folders (made directly on
// disk, since a Put fsyncs twice) and checks the order and the count.
func TestFSListMany(t *testing.T) {
	if testing.Short() {
		t.Skip("slow; skipped in -short")
	}
	dir := t.TempDir()
	const perDir = 120
	for d := range 256 {
		sub := filepath.Join(dir, "data", fmt.Sprintf("%02x", d))
		if err := os.MkdirAll(sub, 0o700); err != nil {
			t.Fatal(err)
		}
		for i := range perDir {
			if err := os.WriteFile(filepath.Join(sub, fmt.Sprintf("%02x%06d", d, i)), nil, 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	s := openFS(t, dir)
	t0 := time.Now()
	n, prev := 0, ""
	for info, err := range s.List(t.Context(), "data/") {
		if err != nil {
			t.Fatal(err)
		}
		if info.Key <= prev {
			t.Fatalf("List out of order: %q after %q", info.Key, prev)
		}
		prev = info.Key
		n++
	}
	if n != 256*perDir {
		t.Fatalf("List returned %d keys, want %d", n, 256*perDir)
	}
	t.Logf("listed %d keys in %v", n, time.Since(t0).Round(time.Millisecond))
	n = 0
	for _, err := range s.List(t.Context(), "data/7f/7f0001") {
		if err != nil {
			t.Fatal(err)
		}
		n++
	}
	if n != perDir-100 {
		t.Fatalf("List(data/7f/7f0001) returned %d keys, want %d", n, perDir-100)
	}
}
