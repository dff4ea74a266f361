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
