package blockdiff

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/objstore"
)

// gateWriter blocks its first write until the test opens the gate: a
// restore caught in the middle.
type gateWriter struct {
	once    sync.Once
	started chan struct{} // closed at the first write
	gate    chan struct{} // closed by the test
	buf     bytes.Buffer
}

func newGateWriter() *gateWriter {
	return &gateWriter{started: make(chan struct{}), gate: make(chan struct{})}
}

func (g *gateWriter) wait() {
	g.once.Do(func() { close(g.started) })
	<-g.gate
}

func (g *gateWriter) Write(p []byte) (int, error) { g.wait(); return g.buf.Write(p) }

func (g *gateWriter) WriteAt(p []byte, off int64) (int, error) {
	g.wait()
	return len(p), nil
}

// requireCleanupBlockedBy checks that a cleanup cannot run now, and that its
// error names the holder's op.
func requireCleanupBlockedBy(t *testing.T, r *Repository, op string) {
	t.Helper()
	_, err := r.Cleanup(context.Background(), CleanupOptions{Grace: -1, LockWait: 50 * time.Millisecond})
	if !errors.Is(err, ErrLocked) {
		t.Fatalf("cleanup during %s: %v, want ErrLocked", op, err)
	}
	locks, lerr := r.Locks(context.Background())
	if lerr != nil || len(locks) != 1 || locks[0].Kind != LockShared || locks[0].Holder.Op != op {
		t.Fatalf("locks during %s: %+v %v", op, locks, lerr)
	}
}

// TestReadsHoldSharedLock: a restore (block or stream) and an open version
// reader hold a shared lock, so a cleanup cannot delete blocks under them;
// the lock goes when they finish.
func TestReadsHoldSharedLock(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, "mem")
	r := newRepo(t, s, "")
	img := randBytes(1, 3*testBS)
	v := backupBytes(t, r, "vol", img, BackupOptions{})
	sv, err := r.BackupStream(ctx, bytes.NewReader(textBytes(2, 1<<20)), StreamOptions{Volume: "dump"})
	if err != nil {
		t.Fatal(err)
	}
	cleaner := openRepo(t, s, Options{})

	for _, tc := range []struct {
		name, id string
		run      func(*gateWriter) error
	}{
		{"Restore", v.ID, func(w *gateWriter) error { return r.Restore(ctx, v.ID, w, RestoreOptions{}) }},
		{"RestoreStream", sv.ID, func(w *gateWriter) error { return r.RestoreStream(ctx, sv.ID, w, StreamRestoreOptions{}) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newGateWriter()
			done := make(chan error, 1)
			go func() { done <- tc.run(w) }()
			<-w.started
			requireCleanupBlockedBy(t, cleaner, "restore "+tc.id)
			close(w.gate)
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			if n := countPrefix(t, s, "locks/"); n != 0 {
				t.Fatalf("%d locks left after the restore", n)
			}
		})
	}

	vr, err := r.OpenVersion(ctx, v.ID, ReaderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	requireCleanupBlockedBy(t, cleaner, "read "+v.ID)
	if err := vr.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := cleaner.Cleanup(ctx, CleanupOptions{Grace: -1, LockWait: 50 * time.Millisecond}); err != nil {
		t.Fatalf("cleanup after the reader closed: %v", err)
	}
	if got := restoreBytes(t, r, v.ID); !bytes.Equal(got, img) {
		t.Fatal("restored bytes differ after the cleanup")
	}
}

// readOnlyStore refuses every write, as credentials that may only read do.
type readOnlyStore struct{ objstore.Store }

var errReadOnly = errors.New("access denied (read-only credentials)")

func (readOnlyStore) Put(context.Context, string, io.Reader, int64) error { return errReadOnly }
func (readOnlyStore) Create(context.Context, string, io.Reader, int64) error {
	return errReadOnly
}
func (readOnlyStore) Delete(context.Context, string) error { return errReadOnly }

// TestNoReadLockRestoresFromReadOnlyStore: without NoReadLock a restore
// from a store it cannot write says that it could not write its lock; with
// it, the restore and the reader work and write nothing.
func TestNoReadLockRestoresFromReadOnlyStore(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, "mem")
	img := randBytes(3, 2*testBS+100)
	v := backupBytes(t, newRepo(t, s, ""), "vol", img, BackupOptions{})
	ro := readOnlyStore{s}

	err := openRepo(t, ro, Options{}).RestoreStream(ctx, v.ID, io.Discard, StreamRestoreOptions{})
	if !errors.Is(err, errReadOnly) || !strings.Contains(err.Error(), "write lock") {
		t.Fatalf("restore from a read-only store with a lock: %v", err)
	}

	r := openRepo(t, ro, Options{NoReadLock: true})
	var buf bytes.Buffer
	if err := r.RestoreStream(ctx, v.ID, &buf, StreamRestoreOptions{}); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(buf.Bytes(), img) {
		t.Fatal("restored bytes differ")
	}
	vr, err := r.OpenVersion(ctx, v.ID, ReaderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(img))
	if _, err := vr.ReadAt(got, 0); err != nil && err != io.EOF {
		t.Fatal(err)
	}
	if err := vr.Close(); err != nil || !bytes.Equal(got, img) {
		t.Fatalf("reader without a lock: equal=%v close=%v", bytes.Equal(got, img), err)
	}
}
