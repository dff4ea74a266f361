package blockdiff

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cairn-backup/cairn/objstore"
)

// Locking (FORMAT.md, "Locks"): backups and scrubs hold shared locks, cleanup
// an exclusive one. A lock is an object locks/<kind>-<ttl seconds>-<random>
// that its holder rewrites every TTL/4; a lock whose object was not rewritten
// for longer than its TTL (measured in the store's clock) is stale and ignored.
// Acquiring writes the lock first and lists the others second, so of two
// conflicting acquirers at least one sees the other: the protocol needs only
// atomic Put and a List that shows completed Puts, no conditional writes.

// LockKind is the kind of a repository lock.
type LockKind string

// Lock kinds.
const (
	LockShared    LockKind = "shared"    // backups and scrubs: many at once
	LockExclusive LockKind = "exclusive" // cleanup and index repair: alone
	lockProbe     LockKind = "probe"     // a clock reading; never a conflict
)

// Defaults of Options.LockTTL and Options.LockWait.
const (
	DefaultLockTTL  = 15 * time.Minute
	DefaultLockWait = 30 * time.Minute
)

// MaxLockTTL is the longest lock TTL (Options.LockTTL): lock keys of a
// longer TTL are not locks to other clients (FORMAT.md, "Locks").
const MaxLockTTL = 7 * 24 * time.Hour

const lockPrefix = "locks/"

// ErrLocked is returned (wrapped) when a lock could not be acquired within
// the wait: the error names the holders.
var ErrLocked = errors.New("blockdiff: repository is locked")

// ErrLockLost is returned (wrapped) when a holder could not refresh its lock
// in time, or found it deleted (broken with unlock --force): what it did under
// the lock must not be committed.
var ErrLockLost = errors.New("blockdiff: repository lock lost")

// LockHolder is the informational content of a lock object.
type LockHolder struct {
	Op      string    `json:"op"`      // what the holder does, e.g. "backup pvc-1"
	Host    string    `json:"host"`    // host name of the holder
	PID     int       `json:"pid"`     // process ID of the holder
	Created time.Time `json:"created"` // when the holder first wrote the lock (its clock)
}

// LockInfo describes a lock found in the repository.
type LockInfo struct {
	Key     string        `json:"key"`
	Kind    LockKind      `json:"kind"`
	TTL     time.Duration `json:"ttl_ns"`
	ModTime time.Time     `json:"refreshed"` // last write, in the store's clock
	Age     time.Duration `json:"age_ns"`    // time since the last write
	Stale   bool          `json:"stale"`     // not refreshed within its TTL
	Holder  LockHolder    `json:"holder"`
}

// lockKey builds the key of a new lock.
func lockKey(kind LockKind, ttl time.Duration) string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	secs := max(int64(ttl/time.Second), 1)
	return lockPrefix + string(kind) + "-" + strconv.FormatInt(secs, 10) + "-" + hex.EncodeToString(b)
}

// parseLockKey returns the kind and TTL encoded in a lock's key; ok is false
// for keys of another format, which readers ignore.
func parseLockKey(key string) (kind LockKind, ttl time.Duration, ok bool) {
	parts := strings.Split(strings.TrimPrefix(key, lockPrefix), "-")
	if len(parts) != 3 || len(parts[2]) != 32 {
		return "", 0, false
	}
	secs, err := strconv.ParseInt(parts[1], 10, 64)
	if err != nil || secs <= 0 || secs > int64(MaxLockTTL/time.Second) {
		return "", 0, false
	}
	switch k := LockKind(parts[0]); k {
	case LockShared, LockExclusive, lockProbe:
		return k, time.Duration(secs) * time.Second, true
	}
	return "", 0, false
}

// lockEntry is a parsed lock listing entry.
type lockEntry struct {
	key  string
	kind LockKind
	ttl  time.Duration
	mod  time.Time
}

// listLocks lists the lock objects of known format.
func (r *Repository) listLocks(ctx context.Context) ([]lockEntry, error) {
	var out []lockEntry
	for info, err := range r.store.List(ctx, lockPrefix) {
		if err != nil {
			return nil, fmt.Errorf("blockdiff: list locks: %w", err)
		}
		if kind, ttl, ok := parseLockKey(info.Key); ok {
			out = append(out, lockEntry{key: info.Key, kind: kind, ttl: ttl, mod: info.ModTime})
		}
	}
	return out, nil
}

// stale reports whether a lock was not refreshed within its TTL at now (the
// store's clock).
func (e lockEntry) stale(now time.Time) bool { return now.Sub(e.mod) > e.ttl }

// Lock is a repository lock held by this process. Its holder goroutine
// rewrites the lock object every TTL/4 until Release.
type Lock struct {
	r    *Repository
	key  string
	kind LockKind
	ttl  time.Duration
	body []byte

	// now is the lock object's modification time when it was acquired: the
	// store's clock, which grace periods are measured against.
	now time.Time

	mu       sync.Mutex
	lastGood time.Time // start of the last successful write (monotonic)
	lost     error
	stop     chan struct{}
	done     chan struct{}
}

// Key returns the lock's object key.
func (l *Lock) Key() string { return l.key }

// Kind returns the lock's kind.
func (l *Lock) Kind() LockKind { return l.kind }

// StoreTime returns the store's clock when the lock was acquired.
func (l *Lock) StoreTime() time.Time { return l.now }

// Check returns an error wrapping ErrLockLost when the lock may have been
// seen as stale by another client (its last successful refresh is older
// than 3/4 of the TTL) or was found deleted. Holders call it right before
// committing what they did under the lock.
func (l *Lock) Check() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.lost != nil {
		return l.lost
	}
	if age := time.Since(l.lastGood); age > l.ttl*3/4 {
		l.lost = fmt.Errorf("%w: %s not refreshed for %s (TTL %s)", ErrLockLost, l.key, age.Round(time.Millisecond), l.ttl)
		return l.lost
	}
	return nil
}

// Release stops refreshing the lock and deletes it. It is safe to call more
// than once, and on a nil Lock (a read without a lock: Options.NoReadLock).
func (l *Lock) Release(ctx context.Context) error {
	if l == nil {
		return nil
	}
	l.mu.Lock()
	stop := l.stop
	l.stop = nil
	l.mu.Unlock()
	if stop == nil {
		return nil
	}
	close(stop)
	<-l.done
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
	defer cancel()
	if err := l.r.store.Delete(ctx, l.key); err != nil {
		return fmt.Errorf("blockdiff: release lock %s: %w", l.key, err)
	}
	l.r.log.Debug("lock released", "lock", l.key)
	return nil
}

// refresher rewrites the lock every TTL/4 (more often after a failure) until
// stopped. A lock found deleted is lost: it is not written again.
func (l *Lock) refresher(stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	every := max(l.ttl/4, 10*time.Millisecond)
	t := time.NewTimer(every)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), l.ttl/2)
		err := l.refresh(ctx)
		cancel()
		next := every
		switch {
		case errors.Is(err, ErrLockLost):
			l.r.log.Error("lock lost", "lock", l.key, "err", err)
			return
		case err != nil:
			l.r.log.Warn("could not refresh lock; retrying", "lock", l.key, "err", err)
			next = max(every/4, 5*time.Millisecond)
		}
		t.Reset(next)
	}
}

// refresh rewrites the lock object once, after checking it still exists.
func (l *Lock) refresh(ctx context.Context) error {
	start := time.Now()
	if _, err := l.r.store.Stat(ctx, l.key); errors.Is(err, objstore.ErrNotExist) {
		l.mu.Lock()
		l.lost = fmt.Errorf("%w: %s was deleted by someone else", ErrLockLost, l.key)
		l.mu.Unlock()
		return l.lost
	} else if err != nil {
		return err
	}
	if err := l.r.store.Put(ctx, l.key, bytes.NewReader(l.body), int64(len(l.body))); err != nil {
		return err
	}
	l.mu.Lock()
	l.lastGood = start
	l.mu.Unlock()
	return nil
}

// write creates the lock object and starts its refresher.
func (l *Lock) write(ctx context.Context) error {
	start := time.Now()
	if err := l.r.store.Put(ctx, l.key, bytes.NewReader(l.body), int64(len(l.body))); err != nil {
		return fmt.Errorf("blockdiff: write lock %s: %w", l.key, err)
	}
	l.lastGood = start
	l.stop, l.done = make(chan struct{}), make(chan struct{})
	go l.refresher(l.stop, l.done)
	return nil
}

// newLock prepares (but does not write) a lock of this process.
func (r *Repository) newLock(kind LockKind, op string) *Lock {
	host, _ := os.Hostname()
	body, _ := json.Marshal(LockHolder{Op: op, Host: host, PID: os.Getpid(), Created: time.Now().UTC()})
	return &Lock{r: r, key: lockKey(kind, r.opts.LockTTL), kind: kind, ttl: r.opts.LockTTL, body: body}
}

// Lock acquires a lock of the given kind, waiting up to Options.LockWait
// while conflicting locks are held: a shared lock conflicts with live
// exclusive locks, an exclusive lock with every other live lock. An
// exclusive acquirer that sees only shared locks keeps its lock while they
// drain, so that new shared acquirers back off and cleanup is not starved.
// op says what the lock is for (it is stored in the lock, with the host name
// and process ID, for `cairn-block locks`).
func (r *Repository) Lock(ctx context.Context, kind LockKind, op string) (*Lock, error) {
	return r.lock(ctx, kind, op, r.opts.LockWait)
}

// readVersion takes the shared lock that keeps a cleanup from deleting what
// a read still needs (none with Options.NoReadLock), then loads version id,
// refusing one that is not valid unless allowInvalid. op names the read in
// the lock and in errors. The caller releases the lock when done reading.
func (r *Repository) readVersion(ctx context.Context, op, id string, allowInvalid bool) (*Version, *Lock, error) {
	var lock *Lock
	if !r.opts.NoReadLock {
		var err error
		if lock, err = r.Lock(ctx, LockShared, op+" "+id); err != nil {
			return nil, nil, err
		}
	}
	v, err := r.Version(ctx, id)
	if err == nil && v.Status != StatusValid && !allowInvalid {
		err = fmt.Errorf("blockdiff: %s %s: status is %s: %w", op, id, v.Status, ErrNotValid)
	}
	if err != nil {
		_ = lock.Release(ctx)
		return nil, nil, err
	}
	return v, lock, nil
}

// lock is Lock with an explicit wait.
func (r *Repository) lock(ctx context.Context, kind LockKind, op string, wait time.Duration) (*Lock, error) {
	if kind != LockShared && kind != LockExclusive {
		return nil, fmt.Errorf("blockdiff: lock kind %q: want shared or exclusive", kind)
	}
	deadline := time.Now().Add(wait)
	backoff := min(max(r.opts.LockTTL/30, 20*time.Millisecond), 10*time.Second)
	for {
		l := r.newLock(kind, op)
		if err := l.write(ctx); err != nil {
			return nil, err
		}
		blockers, err := l.waitConflicts(ctx, deadline, backoff)
		if err == nil && len(blockers) == 0 {
			r.log.Debug("lock acquired", "lock", l.key, "op", op)
			return l, nil
		}
		_ = l.Release(ctx)
		if err != nil {
			return nil, err
		}
		if !time.Now().Before(deadline) {
			return nil, fmt.Errorf("%w: waited %s for %s", ErrLocked, wait, strings.Join(blockers, ", "))
		}
		r.log.Debug("lock busy; backing off", "kind", kind, "blockers", blockers)
		pause := min(backoff+time.Duration(mrand.Int64N(int64(backoff))), time.Until(deadline))
		if err := sleepCtx(ctx, pause); err != nil {
			return nil, err
		}
	}
}

// waitConflicts lists the locks after l was written and returns the live
// conflicting ones. An exclusive lock that sees only shared ones keeps
// listing until they are gone or the deadline passes.
func (l *Lock) waitConflicts(ctx context.Context, deadline time.Time, backoff time.Duration) ([]string, error) {
	for {
		locks, err := l.r.listLocks(ctx)
		if err != nil {
			return nil, err
		}
		var own *lockEntry
		for i := range locks {
			if locks[i].key == l.key {
				own = &locks[i]
			}
		}
		if own == nil {
			return nil, fmt.Errorf("blockdiff: lock %s missing from the listing right after it was written: the store's List does not show completed writes, locking cannot work", l.key)
		}
		now := own.mod
		var shared, excl []string
		pause := backoff // until the next listing: at most until a blocker goes stale
		for _, e := range locks {
			if e.key == l.key || e.kind == lockProbe || e.stale(now) {
				continue
			}
			if e.kind == LockExclusive {
				excl = append(excl, e.key)
			} else if l.kind == LockExclusive {
				shared = append(shared, e.key)
				pause = min(pause, max(e.mod.Add(e.ttl).Sub(now)+50*time.Millisecond, 20*time.Millisecond))
			}
		}
		if len(excl) > 0 || len(shared) == 0 || !time.Now().Before(deadline) {
			if err := l.Check(); err != nil {
				return nil, err
			}
			l.now = now
			return append(excl, shared...), nil
		}
		// Exclusive with only shared locks in the way: keep our lock (new
		// shared acquirers back off) and wait for the holders to finish.
		if err := sleepCtx(ctx, min(pause, time.Until(deadline))); err != nil {
			return nil, err
		}
		// Rewrite our lock before the next listing: its modification time
		// is our reading of the store's clock, so a holder that died is
		// seen stale as soon as its TTL runs out, not only at our next
		// TTL/4 refresh. A failed write keeps the older reading.
		if err := l.refresh(ctx); errors.Is(err, ErrLockLost) {
			return nil, err
		}
	}
}

// sleepCtx sleeps for d or until ctx is done.
func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

// storeNow reads the store's clock by writing and deleting a probe lock
// (which no acquirer counts as a conflict).
func (r *Repository) storeNow(ctx context.Context) (time.Time, error) {
	key := lockKey(lockProbe, time.Minute)
	if err := r.store.Put(ctx, key, bytes.NewReader(nil), 0); err != nil {
		return time.Time{}, fmt.Errorf("blockdiff: write clock probe: %w", err)
	}
	defer r.store.Delete(context.WithoutCancel(ctx), key)
	info, err := r.store.Stat(ctx, key)
	if err != nil {
		return time.Time{}, fmt.Errorf("blockdiff: stat clock probe: %w", err)
	}
	return info.ModTime, nil
}

// Locks lists the repository's locks, oldest first, judging staleness by the
// store's clock.
func (r *Repository) Locks(ctx context.Context) ([]LockInfo, error) {
	now, err := r.storeNow(ctx)
	if err != nil {
		return nil, err
	}
	locks, err := r.listLocks(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]LockInfo, 0, len(locks))
	for _, e := range locks {
		if e.kind == lockProbe && !e.stale(now) {
			continue // someone's clock reading, gone in a moment
		}
		li := LockInfo{Key: e.key, Kind: e.kind, TTL: e.ttl, ModTime: e.mod, Age: now.Sub(e.mod), Stale: e.stale(now)}
		if b, err := r.readSmall(ctx, e.key); err == nil {
			_ = json.Unmarshal(b, &li.Holder)
		}
		out = append(out, li)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ModTime.Before(out[j].ModTime) })
	return out, nil
}

// readSmall reads an object of at most 64 KiB.
func (r *Repository) readSmall(ctx context.Context, key string) ([]byte, error) {
	return r.readInto(ctx, key, nil, 64<<10)
}

// UnlockOptions tune Unlock.
type UnlockOptions struct {
	// Force removes live locks too. Only do this when the holder is known to
	// be dead: a live holder notices at its next refresh and fails, but what
	// it wrote in the meantime may race with a cleanup.
	Force bool
	// Keys limits the removal to these lock keys (as Locks reports them).
	Keys []string
}

// Unlock removes stale locks (all locks with Force) and returns those it
// removed.
func (r *Repository) Unlock(ctx context.Context, opts UnlockOptions) ([]LockInfo, error) {
	locks, err := r.Locks(ctx)
	if err != nil {
		return nil, err
	}
	want := map[string]bool{}
	for _, k := range opts.Keys {
		if !strings.HasPrefix(k, lockPrefix) {
			k = lockPrefix + k
		}
		want[k] = true
	}
	var removed []LockInfo
	for _, li := range locks {
		if len(want) > 0 && !want[li.Key] {
			continue
		}
		delete(want, li.Key)
		if !li.Stale && !opts.Force {
			r.log.Warn("lock is live; not removed (use force if its holder is dead)", "lock", li.Key, "op", li.Holder.Op,
				"host", li.Holder.Host, "pid", li.Holder.PID)
			continue
		}
		if err := r.store.Delete(ctx, li.Key); err != nil {
			return removed, fmt.Errorf("blockdiff: remove lock %s: %w", li.Key, err)
		}
		r.log.Info("lock removed", "lock", li.Key, "op", li.Holder.Op, "stale", li.Stale)
		removed = append(removed, li)
	}
	for k := range want {
		return removed, fmt.Errorf("blockdiff: no lock %s", k)
	}
	return removed, nil
}
