package blockdiff

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestRemoveProtectLabels(t *testing.T) {
	ctx := context.Background()
	r := newRepo(t, openStore(t, "mem"), "")
	v := backupBytes(t, r, "a", randBytes(1, testBS), BackupOptions{Labels: map[string]string{"env": "prod"}})
	backupBytes(t, r, "b", randBytes(2, testBS), BackupOptions{})

	if _, err := r.SetProtected(ctx, v.ID, true); err != nil {
		t.Fatal(err)
	}
	if err := r.Remove(ctx, v.ID, RemoveOptions{Force: true}); !errors.Is(err, ErrProtected) {
		t.Fatalf("remove protected: %v", err)
	}
	if _, err := r.SetProtected(ctx, v.ID, false); err != nil {
		t.Fatal(err)
	}
	if err := r.Remove(ctx, v.ID, RemoveOptions{MinAge: time.Hour}); !errors.Is(err, ErrTooYoung) {
		t.Fatalf("remove young: %v", err)
	}
	got, err := r.SetLabels(ctx, v.ID, map[string]string{"tier": "gold"}, []string{"env"})
	if err != nil || got.Labels["tier"] != "gold" || got.Labels["env"] != "" {
		t.Fatalf("labels: %v %v", got, err)
	}
	if _, err := r.SetLabels(ctx, v.ID, map[string]string{"bad key": "x"}, nil); err == nil {
		t.Fatal("bad label key accepted")
	}
	sel, err := r.List(ctx, Filter{Labels: map[string]string{"tier": "gold"}})
	if err != nil || len(sel) != 1 || sel[0].ID != v.ID {
		t.Fatalf("label filter: %v %v", sel, err)
	}
	if err := r.Remove(ctx, v.ID, RemoveOptions{MinAge: time.Hour, Force: true}); err != nil {
		t.Fatal(err)
	}
	all, err := r.List(ctx, Filter{})
	if err != nil || len(all) != 1 || all[0].Volume != "b" {
		t.Fatalf("after rm: %v %v", all, err)
	}
	if _, err := r.Version(ctx, v.ID); !errors.Is(err, ErrVersionNotFound) {
		t.Fatalf("removed version: %v", err)
	}
	if _, err := r.Version(ctx, "../config"); !errors.Is(err, ErrVersionNotFound) {
		t.Fatalf("path escape: %v", err)
	}
}

// TestRestoreDetectsCorruption swaps one data object for another and checks
// that the restore names the version, the offset and the object.
func TestRestoreDetectsCorruption(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, "mem")
	r := newRepo(t, s, "")
	img := randBytes(4, 4*testBS)
	v := backupBytes(t, r, "c", img, BackupOptions{})
	victim, donor := dataKey(v.refs[2].ID), dataKey(v.refs[0].ID)
	body := allObjects(t, s)[donor]
	if err := s.Put(ctx, victim, bytes.NewReader(body), int64(len(body))); err != nil {
		t.Fatal(err)
	}
	err := r.RestoreFile(ctx, v.ID, t.TempDir()+"/out", RestoreFileOptions{})
	if !errors.Is(err, ErrCorrupt) {
		t.Fatalf("corrupt restore: %v", err)
	}
	for _, want := range []string{v.ID, "offset 131072", victim} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %q", err, want)
		}
	}
}

func TestRestoreOverwrite(t *testing.T) {
	ctx := context.Background()
	r := newRepo(t, openStore(t, "mem"), "")
	img := append(randBytes(5, testBS), make([]byte, 2*testBS)...)
	v := backupBytes(t, r, "o", img, BackupOptions{})
	p := writeFile(t, bytes.Repeat([]byte{0xff}, 5*testBS))
	if err := r.RestoreFile(ctx, v.ID, p, RestoreFileOptions{}); err == nil {
		t.Fatal("restore over an existing file without overwrite")
	}
	for _, sparse := range []bool{false, true} {
		if err := r.RestoreFile(ctx, v.ID, p, RestoreFileOptions{Overwrite: true, Sparse: sparse}); err != nil {
			t.Fatal(err)
		}
		got := readFile(t, p)
		if !bytes.Equal(got, img) {
			t.Fatalf("sparse=%v: overwritten file differs", sparse)
		}
		var st syscall.Stat_t
		if err := syscall.Stat(p, &st); err != nil {
			t.Fatal(err)
		}
		if allocated := st.Blocks * 512; sparse != (allocated < int64(len(img))) {
			t.Errorf("sparse=%v: %d of %d bytes allocated", sparse, allocated, len(img))
		}
	}
	// An existing writer at Sparse=false gets zeros written over old data.
	w := &memWriter{b: bytes.Repeat([]byte{0xff}, len(img))}
	if err := r.Restore(ctx, v.ID, w, RestoreOptions{}); err != nil || !bytes.Equal(w.b, img) {
		t.Fatalf("restore to a device-like writer: %v", err)
	}
}

// memWriter is an io.WriterAt over a fixed buffer, standing in for a device.
type memWriter struct{ b []byte }

func (m *memWriter) WriteAt(p []byte, off int64) (int, error) { return copy(m.b[off:], p), nil }
