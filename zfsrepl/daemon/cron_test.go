package daemon

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/zfsrepl/config"
	"github.com/cairn-backup/cairn/zfsrepl/internal/memzfs"
)

// stepClock stands still until set; its timers fire then.
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

// set moves the clock once a timer waits, and fires the timers due.
func (c *stepClock) set(t *testing.T, to time.Time) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
		c.mu.Lock()
		n := len(c.waiters)
		c.mu.Unlock()
		if n > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no timer waits on the clock")
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = to
	for ch, at := range c.waiters {
		if !at.After(to) {
			ch <- to
			delete(c.waiters, ch)
		}
	}
}

const cronConfig = `
global:
  control:
    sockpath: %s
jobs:
  - name: hourly
    type: snap
    filesystems: {
      "tank/home": true
    }
    snapshotting:
      type: cron
      prefix: cron_
      cron: "*/10 * * * *"
      timestamp_format: human
    pruning:
      keep:
        - type: last_n
          count: 3
`

// TestDaemonCronSnapJob runs a snap job with zrepl's cron snapshotting
// (every 10 minutes) on a clock the test moves: snapshots are taken at the
// cron's times only (none at start, times missed while the daemon was behind
// skipped) and pruned to the last 3.
func TestDaemonCronSnapJob(t *testing.T) {
	home := memzfs.New(1)
	home.CreateFS("tank/home")
	c := &stepClock{t: time.Date(2026, 1, 1, 0, 3, 0, 0, time.UTC), waiters: map[chan time.Time]time.Time{}}
	home.Now = c.now
	sock := filepath.Join(t.TempDir(), "control")
	cfg, err := config.Parse(fmt.Appendf(nil, cronConfig, sock))
	if err != nil {
		t.Fatal(err)
	}
	d, err := New(cfg, Env{Now: c.now, After: c.after,
		Local: func(j *config.Job) (Local, error) {
			return &memzfs.Sender{Pool: home, Job: j.Name, Filter: j.Filter}, nil
		}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx, sock) }()
	defer func() { cancel(); <-done }()
	var taken []string
	for i, at := range []string{"00:10", "00:20", "00:47", "00:50", "01:00"} {
		hm, _ := time.Parse("15:04", at)
		c.set(t, time.Date(2026, 1, 1, hm.Hour(), hm.Minute(), 0, 0, time.UTC))
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(2 * time.Millisecond) {
			if s := d.Status()[0]; s.Runs == i+1 && s.State == StateIdle {
				if s.Snapshot == nil || s.Snapshot.Name != "cron_2026-01-01_"+at+":00" {
					t.Fatalf("at %s: %+v", at, s.Snapshot)
				}
				taken = append(taken, s.Snapshot.Name)
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("no round at %s: %+v", at, d.Status()[0])
			}
		}
		want := taken[max(0, len(taken)-3):]
		if got := snapNames(home.Versions("tank/home")); !slices.Equal(got, want) {
			t.Fatalf("at %s: tank/home holds %v, want %v", at, got, want)
		}
	}
}
