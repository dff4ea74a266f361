package blockdiff

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestLockProtocol: shared locks coexist, an exclusive lock excludes them
// both ways, a stale lock is ignored and removed by Unlock, a live one only
// with Force, and a holder whose lock was broken notices.
func TestLockProtocol(t *testing.T) {
	ctx := context.Background()
	cs := newClockStore(openStore(t, "mem"))
	newRepo(t, cs, "")
	opts := Options{LockTTL: 10 * time.Minute, LockWait: 50 * time.Millisecond}
	a, b := openRepo(t, cs, opts), openRepo(t, cs, opts)

	s1, err := a.Lock(ctx, LockShared, "backup one")
	if err != nil {
		t.Fatal(err)
	}
	s2, err := b.Lock(ctx, LockShared, "backup two")
	if err != nil {
		t.Fatalf("second shared lock: %v", err)
	}
	if _, err := b.Lock(ctx, LockExclusive, "cleanup"); !errors.Is(err, ErrLocked) {
		t.Fatalf("exclusive beside shared locks: %v", err)
	}
	_ = s1.Release(ctx)
	_ = s2.Release(ctx)
	x, err := a.Lock(ctx, LockExclusive, "cleanup")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Lock(ctx, LockShared, "backup"); !errors.Is(err, ErrLocked) {
		t.Fatalf("shared beside an exclusive lock: %v", err)
	}
	if _, err := b.Lock(ctx, LockExclusive, "cleanup 2"); !errors.Is(err, ErrLocked) {
		t.Fatalf("two exclusive locks: %v", err)
	}
	_ = x.Release(ctx)
	if n := countPrefix(t, cs, "locks/"); n != 0 {
		t.Fatalf("%d locks left after release", n)
	}

	// A holder that dies leaves its lock: live until its TTL passes by the
	// store's clock, then ignored, and removed by a plain unlock.
	dead := a.newLock(LockShared, "backup that dies")
	if err := cs.Put(ctx, dead.key, bytes.NewReader(dead.body), int64(len(dead.body))); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Lock(ctx, LockExclusive, "cleanup"); !errors.Is(err, ErrLocked) {
		t.Fatalf("exclusive beside a live dead lock: %v", err)
	}
	if removed, err := b.Unlock(ctx, UnlockOptions{}); err != nil || len(removed) != 0 {
		t.Fatalf("unlock removed a live lock: %v %v", removed, err)
	}
	cs.advance(11 * time.Minute)
	locks, err := b.Locks(ctx)
	if err != nil || len(locks) != 1 || !locks[0].Stale || locks[0].Holder.Op != "backup that dies" {
		t.Fatalf("locks: %+v %v", locks, err)
	}
	x, err = b.Lock(ctx, LockExclusive, "cleanup")
	if err != nil {
		t.Fatalf("a stale lock blocked: %v", err)
	}
	_ = x.Release(ctx)
	if removed, err := b.Unlock(ctx, UnlockOptions{}); err != nil || len(removed) != 1 {
		t.Fatalf("unlock of a stale lock: %v %v", removed, err)
	}

	// Breaking a live lock: its holder finds out at its next refresh.
	fast := openRepo(t, cs, Options{LockTTL: time.Second, LockWait: time.Second})
	l, err := fast.Lock(ctx, LockShared, "backup")
	if err != nil {
		t.Fatal(err)
	}
	if removed, err := b.Unlock(ctx, UnlockOptions{Force: true}); err != nil || len(removed) != 1 {
		t.Fatalf("unlock --force: %v %v", removed, err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for l.Check() == nil && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if err := l.Check(); !errors.Is(err, ErrLockLost) {
		t.Fatalf("broken lock: Check = %v", err)
	}
	_ = l.Release(ctx)
}

// TestCleanupDeletesOnlyOrphansAfterGrace: the orphans of a killed backup
// stay while its lock is live and while they are younger than the grace
// period (by an injected clock), and go after; referenced data never does,
// and the index is compacted to the live objects.
func TestCleanupDeletesOnlyOrphansAfterGrace(t *testing.T) {
	ctx := context.Background()
	cs := newClockStore(openStore(t, "mem"))
	newRepo(t, cs, "")
	opts := Options{LockTTL: 15 * time.Minute, LockWait: 100 * time.Millisecond}
	r := openRepo(t, cs, opts)
	pool := blockPool(2, 10)
	v1 := backupBytes(t, r, "vol", blocksImage(pool, 0, 1, 2), BackupOptions{})
	v2 := backupBytes(t, r, "vol", blocksImage(pool, 2, 3), BackupOptions{})

	// A backup that is killed after storing some new blocks.
	ks := &killStore{Store: cs}
	victim := openRepo(t, ks, Options{LockTTL: 15 * time.Minute, Workers: 1, Transfers: 1})
	var reads atomic.Int32
	img := blocksImage(pool, 4, 5, 6, 7, 8, 9)
	src := NewSource(readerAtFunc(func(p []byte, off int64) (int, error) {
		if reads.Add(1) == 4 {
			time.Sleep(50 * time.Millisecond) // let the first uploads land
			ks.killed.Store(true)
		}
		return bytes.NewReader(img).ReadAt(p, off)
	}), int64(len(img)))
	if _, err := victim.Backup(ctx, src, BackupOptions{Volume: "vol"}); err == nil {
		t.Fatal("the killed backup succeeded")
	}
	orphans := countPrefix(t, cs, "data/") - 4
	if orphans < 1 || countPrefix(t, cs, "locks/") != 1 {
		t.Fatalf("killed backup left %d orphans and %d locks", orphans, countPrefix(t, cs, "locks/"))
	}

	// Its lock is live: cleanup waits, then gives up.
	cs.advance(10 * time.Minute)
	if _, err := r.Cleanup(ctx, CleanupOptions{}); !errors.Is(err, ErrLocked) {
		t.Fatalf("cleanup beside a live lock: %v", err)
	}
	// The lock is stale, the orphans are still younger than the grace.
	cs.advance(10 * time.Minute)
	res, err := r.Cleanup(ctx, CleanupOptions{})
	if err != nil || res.Deleted != 0 || res.Young != orphans || res.Referenced != 4 {
		t.Fatalf("cleanup within the grace: %+v %v", res, err)
	}
	// Remove v1: blocks 0 and 1 become orphans too, but young ones by the
	// injected clock only after the grace passes.
	if err := r.Remove(ctx, v1.ID, RemoveOptions{}); err != nil {
		t.Fatal(err)
	}
	cs.advance(45 * time.Minute)
	if res, err := r.Cleanup(ctx, CleanupOptions{DryRun: true}); err != nil || res.Deleted != orphans+2 {
		t.Fatalf("dry run: %+v %v", res, err)
	}
	if n := countPrefix(t, cs, "data/"); n != 4+orphans {
		t.Fatalf("the dry run deleted: %d objects", n)
	}
	res, err = r.Cleanup(ctx, CleanupOptions{})
	if err != nil || res.Deleted != orphans+2 || res.MarkedAbandoned != 1 || res.SegmentsAfter != 1 || res.IndexEntries != 2 {
		t.Fatalf("cleanup after the grace: %+v %v", res, err)
	}
	if n := countPrefix(t, cs, "data/"); n != 2 {
		t.Fatalf("%d data objects left, want v2's 2", n)
	}
	if rep := scrub(t, r, true); !rep.OK() {
		t.Fatalf("deep scrub after cleanup: %+v", rep)
	}
	if !bytes.Equal(restoreBytes(t, r, v2.ID), blocksImage(pool, 2, 3)) {
		t.Fatal("v2 differs after cleanup")
	}
	// The same process backs up blocks it deduplicated before: its dedup
	// set must have noticed the compaction and store them again.
	v3 := backupBytes(t, r, "vol", blocksImage(pool, 0, 1, 2), BackupOptions{})
	if v3.Stats.BlocksNew != 2 || v3.Stats.BlocksDeduped != 1 {
		t.Fatalf("backup after cleanup: %+v", v3.Stats)
	}
	if rep := scrub(t, r, true); !rep.OK() {
		t.Fatalf("deep scrub: %+v", rep)
	}
	if st := statuses(t, r); len(st) != 3 {
		t.Fatalf("versions: %v", st)
	}
}

type readerAtFunc func(p []byte, off int64) (int, error)

func (f readerAtFunc) ReadAt(p []byte, off int64) (int, error) { return f(p, off) }

// TestCleanupRacesBackups runs cleanup with no grace period in a loop while
// four backups run at once (two sharing one Repository, two on handles of
// their own, as separate processes would) and old versions are removed: no
// valid version may ever lose a block.
func TestCleanupRacesBackups(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, "mem")
	newRepo(t, s, "")
	opts := Options{LockTTL: 5 * time.Second, LockWait: time.Minute, Transfers: 2, Workers: 1}
	shared := openRepo(t, s, opts)
	repos := []*Repository{shared, shared, openRepo(t, s, opts), openRepo(t, s, opts)}
	cleaner, pruner := openRepo(t, s, opts), openRepo(t, s, opts)
	pool := blockPool(3, 24)

	var mu sync.Mutex
	want := map[string][]byte{} // version -> image
	var wg sync.WaitGroup
	errc := make(chan error, 16)
	for w, r := range repos {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 9))
			for i := range 8 {
				idx := make([]int, 6)
				for j := range idx {
					idx[j] = rng.IntN(len(pool))
				}
				// Shared blocks deduplicate across volumes; a block of its
				// own becomes an orphan once the version is removed.
				img := append(blocksImage(pool, idx...), randBytes(uint64(1000*w+i+77), testBS)...)
				slow := readerAtFunc(func(p []byte, off int64) (int, error) {
					time.Sleep(3 * time.Millisecond) // let cleanups and removals interleave
					return bytes.NewReader(img).ReadAt(p, off)
				})
				v, err := r.Backup(ctx, NewSource(slow, int64(len(img))),
					BackupOptions{Volume: fmt.Sprintf("vol%d", w)})
				if err != nil {
					errc <- fmt.Errorf("worker %d backup %d: %w", w, i, err)
					return
				}
				mu.Lock()
				want[v.ID] = img
				mu.Unlock()
			}
		})
	}
	done := make(chan struct{})
	var cleanups, deleted atomic.Int64
	var bg sync.WaitGroup
	bg.Go(func() { // cleanup, no grace at all: only the locks protect
		for {
			select {
			case <-done:
				return
			default:
			}
			res, err := cleaner.Cleanup(ctx, CleanupOptions{Grace: -1})
			if err != nil {
				errc <- fmt.Errorf("cleanup: %w", err)
				return
			}
			cleanups.Add(1)
			deleted.Add(int64(res.Deleted))
			time.Sleep(30 * time.Millisecond)
		}
	})
	bg.Go(func() { // keep the two newest versions of each volume
		for {
			select {
			case <-done:
				return
			default:
			}
			if _, err := pruner.Enforce(ctx, "latest2", EnforceOptions{}); err != nil {
				errc <- fmt.Errorf("enforce: %w", err)
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
	wg.Wait()
	close(done)
	bg.Wait()
	close(errc)
	for err := range errc {
		t.Error(err)
	}
	if t.Failed() {
		return
	}
	if _, err := pruner.Enforce(ctx, "latest2", EnforceOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cleaner.Cleanup(ctx, CleanupOptions{Grace: -1}); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d cleanups deleted %d objects during the race", cleanups.Load(), deleted.Load())
	if cleanups.Load() < 2 || deleted.Load() == 0 {
		t.Errorf("the race did not exercise cleanup: %d cleanups, %d deleted", cleanups.Load(), deleted.Load())
	}
	if rep := scrub(t, cleaner, true); !rep.OK() || rep.VersionsChecked != 8 {
		t.Fatalf("deep scrub after the race: %d versions checked, %d damaged blocks, marked invalid: %v",
			rep.VersionsChecked, len(rep.Failures), rep.Marked)
	}
	vs, _ := cleaner.List(ctx, Filter{})
	for _, v := range vs {
		if !bytes.Equal(restoreBytes(t, cleaner, v.ID), want[v.ID]) {
			t.Errorf("version %s differs", v.ID)
		}
	}
	if n := countPrefix(t, s, "locks/"); n != 0 {
		t.Errorf("%d locks left", n)
	}
}
