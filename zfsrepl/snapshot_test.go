package zfsrepl_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/zfsrepl"
	"github.com/cairn-backup/cairn/zfsrepl/internal/memzfs"
)

func TestSnapshotName(t *testing.T) {
	at := time.Date(2026, 3, 4, 5, 6, 7, 890e6, time.FixedZone("CET", 3600))
	for layout, want := range map[string]string{
		"":                           "zrepl_20260304_040607_000",
		zfsrepl.DenseTimestamp:       "zrepl_20260304_040607_000",
		"2006-01-02T15:04:05.000Z":   "zrepl_2026-03-04T04:06:07.890Z",
		zfsrepl.UnixSecondsTimestamp: "zrepl_1772597167",
		"2006-01-02_15:04:05":        "zrepl_2026-03-04_04:06:07",
	} {
		if got := zfsrepl.SnapshotName("zrepl_", layout, at); got != want {
			t.Errorf("layout %q: %q, want %q", layout, got, want)
		}
	}
}

func snapTarget(t *testing.T) (*memzfs.Pool, *memzfs.Sender) {
	t.Helper()
	p := memzfs.New(1)
	p.CreateFS("tank/a")
	p.CreateFS("tank/b")
	f, err := zfsrepl.NewFilter(map[string]bool{"tank<": true, "tank": false})
	if err != nil {
		t.Fatal(err)
	}
	return p, &memzfs.Sender{Pool: p, Job: "snap", Filter: f}
}

// TestNextSnapshotTime: zrepl's sync point is the earliest of each
// filesystem's newest prefixed snapshot plus the interval, now when that
// passed or when there is none.
func TestNextSnapshotTime(t *testing.T) {
	ctx := context.Background()
	p, s := snapTarget(t)
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	if got, err := zfsrepl.NextSnapshotTime(ctx, s, "zrepl_", 10*time.Minute, now); err != nil || !got.Equal(now) {
		t.Fatalf("no snapshots: %v %v", got, err)
	}
	p.SnapshotAt("tank/a", "zrepl_x", now.Add(-4*time.Minute))
	p.SnapshotAt("tank/b", "zrepl_y", now.Add(-7*time.Minute))
	p.SnapshotAt("tank/b", "manual", now.Add(-1*time.Minute))
	if got, _ := zfsrepl.NextSnapshotTime(ctx, s, "zrepl_", 10*time.Minute, now); !got.Equal(now.Add(3 * time.Minute)) {
		t.Fatalf("sync point %v, want 3 minutes from now", got)
	}
	if got, _ := zfsrepl.NextSnapshotTime(ctx, s, "zrepl_", 5*time.Minute, now); !got.Equal(now) {
		t.Fatalf("overdue: sync point %v, want now", got)
	}
}

// TestSnapshotAllHooks: pre hooks run in order and post hooks in reverse,
// with zrepl's environment; a fatal pre hook failure skips the snapshot of
// that filesystem only.
func TestSnapshotAllHooks(t *testing.T) {
	ctx := context.Background()
	p, s := snapTarget(t)
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	p.Now = func() time.Time { return now }
	dir := t.TempDir()
	logf := filepath.Join(dir, "log")
	script := func(name, body string) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
			t.Fatal(err)
		}
		return path
	}
	one := script("one", `echo "one $ZREPL_HOOKTYPE $ZREPL_FS $ZREPL_SNAPNAME" >> `+logf)
	two := script("two", `echo "two $ZREPL_HOOKTYPE $ZREPL_FS" >> `+logf+`; [ "$ZREPL_FS" != tank/b ]`)
	fb, _ := zfsrepl.NewFilter(map[string]bool{"tank/b": true})
	slow := script("slow", `sleep 5`)
	cfg := zfsrepl.SnapshotConfig{Prefix: "zrepl_", Interval: time.Minute, Now: func() time.Time { return now },
		Hooks: []zfsrepl.Hook{{Path: one}, {Path: two, ErrIsFatal: true}, {Path: slow, Timeout: 100 * time.Millisecond, Filesystems: fb}}}
	rep := zfsrepl.SnapshotAll(ctx, s, cfg)
	if rep.Err() == nil || strings.Join(rep.Taken, " ") != "tank/a" || len(rep.Failed) != 1 || !strings.HasPrefix(rep.Failed[0], "tank/b: ") {
		t.Fatalf("report %+v, err %v", rep, rep.Err())
	}
	if got := snapNames(p.Versions("tank/a")); len(got) != 1 || got[0] != "zrepl_20260101_120000_000" {
		t.Fatalf("tank/a has %v", got)
	}
	if got := snapNames(p.Versions("tank/b")); len(got) != 0 {
		t.Fatalf("tank/b has %v after a fatal hook failure", got)
	}
	b, _ := os.ReadFile(logf)
	want := "one pre_snapshot tank/a zrepl_20260101_120000_000\ntwo pre_snapshot tank/a\ntwo post_snapshot tank/a\none post_snapshot tank/a zrepl_20260101_120000_000\n" +
		"one pre_snapshot tank/b zrepl_20260101_120000_000\ntwo pre_snapshot tank/b\none post_snapshot tank/b zrepl_20260101_120000_000\n"
	if string(b) != want {
		t.Fatalf("hook log:\n%s\nwant\n%s", b, want)
	}
	// The slow hook times out: not fatal, the snapshot is taken.
	cfg.Hooks = cfg.Hooks[2:]
	now = now.Add(time.Minute)
	start := time.Now()
	if rep := zfsrepl.SnapshotAll(ctx, s, cfg); rep.Err() != nil || len(rep.Taken) != 2 {
		t.Fatalf("with a timed-out hook: %+v %v", rep, rep.Err())
	}
	if d := time.Since(start); d > 4*time.Second {
		t.Fatalf("the hook's timeout did not stop it: %v", d)
	}
}

// TestRunPeriodic runs the snapshotter with a short interval: rounds come
// one interval apart and it stops with its context.
func TestRunPeriodic(t *testing.T) {
	p, s := snapTarget(t)
	p.Now = time.Now
	ctx, cancel := context.WithCancel(context.Background())
	var mu sync.Mutex
	var names []string
	err := zfsrepl.RunPeriodic(ctx, s, zfsrepl.SnapshotConfig{Prefix: "zrepl_", Interval: 1100 * time.Millisecond, TimestampFormat: zfsrepl.UnixSecondsTimestamp},
		func(r *zfsrepl.SnapshotReport) {
			mu.Lock()
			defer mu.Unlock()
			names = append(names, r.Name)
			if len(names) == 2 {
				cancel()
			}
		})
	if err != context.Canceled || len(names) != 2 || names[0] == names[1] {
		t.Fatalf("RunPeriodic: %v, rounds %v", err, names)
	}
	if got := snapNames(p.Versions("tank/a")); len(got) != 2 {
		t.Fatalf("tank/a has %v", got)
	}
}

// stepClock is a clock that moves only when set; its timers fire then.
type stepClock struct {
	mu      sync.Mutex
	t       time.Time
	waiters map[chan time.Time]time.Time
}

func (c *stepClock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }

func (c *stepClock) after(d time.Duration) <-chan time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	ch := make(chan time.Time, 1)
	c.waiters[ch] = c.t.Add(d)
	return ch
}

// set moves the clock to t once the snapshotter waits on a timer.
func (c *stepClock) set(t time.Time) {
	for {
		c.mu.Lock()
		n := len(c.waiters)
		c.mu.Unlock()
		if n > 0 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = t
	for ch, at := range c.waiters {
		if !at.After(t) {
			ch <- t
			delete(c.waiters, ch)
		}
	}
}

// TestRunPeriodicClockJumps: when the clock jumps past several intervals
// (a round that took long, a suspended machine), the snapshotter takes one
// round, not one per missed interval nor a second at the same time, and
// stays on its schedule.
func TestRunPeriodicClockJumps(t *testing.T) {
	p, s := snapTarget(t)
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	c := &stepClock{t: t0, waiters: map[chan time.Time]time.Time{}}
	p.Now = c.now
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	rounds := make(chan string, 10)
	started := 0
	go func() {
		_ = zfsrepl.RunPeriodic(ctx, s, zfsrepl.SnapshotConfig{Prefix: "zrepl_", Interval: 10 * time.Minute, Now: c.now, After: c.after,
			Start: func() { started++ }},
			func(r *zfsrepl.SnapshotReport) {
				if r.Err() != nil {
					t.Errorf("round %s: %v", r.Name, r.Err())
				}
				rounds <- r.Name
			})
	}()
	want := func(at time.Time) {
		t.Helper()
		select {
		case n := <-rounds:
			if n != zfsrepl.SnapshotName("zrepl_", "", at) {
				t.Fatalf("round %s, want one at %v", n, at)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("no round at %v", at)
		}
	}
	want(t0) // no snapshot yet: one now
	// 6h: one round for the 35 missed; the one due at 6h10 runs late at
	// 6h15, and the schedule stays: 6h20, none at 6h25.
	for _, d := range []time.Duration{10 * time.Minute, 6 * time.Hour, 6*time.Hour + 15*time.Minute, 6*time.Hour + 20*time.Minute} {
		c.set(t0.Add(d))
		want(t0.Add(d))
	}
	c.set(t0.Add(6*time.Hour + 25*time.Minute)) // the 6h30 timer waits
	select {
	case n := <-rounds:
		t.Fatalf("an extra round %s", n)
	case <-time.After(200 * time.Millisecond):
	}
	cancel()
	if got := snapNames(p.Versions("tank/a")); len(got) != 5 {
		t.Fatalf("tank/a has %v", got)
	}
	if started != 5 {
		t.Fatalf("Start called %d times for 5 rounds", started)
	}
}
