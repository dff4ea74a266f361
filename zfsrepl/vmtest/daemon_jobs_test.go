package vmtest

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/internal/testenv"
	"github.com/cairn-backup/cairn/retention"
	"github.com/cairn-backup/cairn/zfsrepl"
	"github.com/cairn-backup/cairn/zfsrepl/config"
	"github.com/cairn-backup/cairn/zfsrepl/daemon"
	"github.com/cairn-backup/cairn/zfsrepl/zfs"
)

// fakeClock is the daemon's clock in these tests: it stands still until the
// test sets it, and its timers fire then, so that each step of the clock
// past a snapshot interval makes exactly one snapshot round.
type fakeClock struct {
	mu      sync.Mutex
	t       time.Time
	waiters []clockWaiter
}

type clockWaiter struct {
	at time.Time
	ch chan time.Time
}

func newFakeClock(t time.Time) *fakeClock { return &fakeClock{t: t} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

// After returns a channel that receives the time once the clock has been
// set d or more past its current time.
func (c *fakeClock) After(d time.Duration) <-chan time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	ch := make(chan time.Time, 1)
	if d <= 0 {
		ch <- c.t
		return ch
	}
	c.waiters = append(c.waiters, clockWaiter{c.t.Add(d), ch})
	return ch
}

// Set moves the clock to t, once a snapshotter waits on a timer, and fires
// the timers due.
func (c *fakeClock) Set(t *testing.T, to time.Time) {
	t.Helper()
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		c.mu.Lock()
		n := len(c.waiters)
		c.mu.Unlock()
		if n > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no snapshotter waits on the clock")
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = to
	kept := c.waiters[:0]
	for _, w := range c.waiters {
		if !w.at.After(to) {
			w.ch <- to
		} else {
			kept = append(kept, w)
		}
	}
	c.waiters = kept
}

// prefixTime gives the snapshots named prefix<dense UTC> the time of their
// name, as fakeTime does for zrepl_.
type prefixTime struct {
	daemon.Local
	prefix string
}

func (p prefixTime) ListVersions(ctx context.Context, fs string) ([]zfs.Version, error) {
	vs, err := p.Local.ListVersions(ctx, fs)
	for i, v := range vs {
		if s, ok := strings.CutPrefix(v.Name, p.prefix); ok {
			if t, err := time.Parse(zfsrepl.DenseTimestamp, s); err == nil {
				vs[i].Creation = t
			}
		}
	}
	return vs, err
}

// jobDaemon is an in-process daemon of one configuration over the guest's
// zfs, on a fake clock.
type jobDaemon struct {
	cfg    *config.Config
	sock   string
	cancel context.CancelFunc
	done   chan error
	ctl    *daemon.Control
}

// startJobDaemon runs a daemon of text (a configuration whose
// global.control.sockpath is sock) until stop or the test's end; push and
// snap jobs see snapshot times from their names (prefix) and run on clock.
func startJobDaemon(t *testing.T, text, sock, prefix string, clock *fakeClock) *jobDaemon {
	t.Helper()
	cfg, err := config.Parse([]byte(text))
	if err != nil {
		t.Fatal(err)
	}
	runner := &zfs.Runner{}
	env := daemon.Env{
		Local: func(j *config.Job) (daemon.Local, error) {
			f := j.Filter
			return prefixTime{&zfsrepl.LocalSender{ZFS: runner, Job: j.Name, Filter: f}, prefix}, nil
		},
	}
	if clock != nil {
		env.Now, env.After = clock.Now, clock.After
	}
	d, err := daemon.New(cfg, env, slog.New(slog.NewTextHandler(tlog{t}, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	jd := &jobDaemon{cfg: cfg, sock: sock, cancel: cancel, done: make(chan error, 1), ctl: daemon.NewControl(sock)}
	go func() { jd.done <- d.Run(ctx, sock) }()
	t.Cleanup(func() { jd.stop(t) })
	for i := 0; ; i++ {
		if _, err := jd.ctl.Status(context.Background()); err == nil {
			return jd
		} else if i > 500 {
			t.Fatalf("daemon did not start: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (jd *jobDaemon) stop(t *testing.T) {
	t.Helper()
	if jd.cancel == nil {
		return
	}
	jd.cancel()
	jd.cancel = nil
	select {
	case err := <-jd.done:
		if err != nil {
			t.Errorf("daemon: %v", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("daemon did not stop")
	}
}

func (jd *jobDaemon) status(t *testing.T, job string) daemon.Status {
	t.Helper()
	st, err := jd.ctl.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range st {
		if s.Name == job {
			return s
		}
	}
	t.Fatalf("no job %s", job)
	return daemon.Status{}
}

// waitRuns waits until job has completed runs runs and is between runs.
func (jd *jobDaemon) waitRuns(t *testing.T, job string, runs int) daemon.Status {
	t.Helper()
	for deadline := time.Now().Add(120 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		s := jd.status(t, job)
		if s.Runs >= runs && (s.State == daemon.StateIdle || s.State == daemon.StateError) {
			if s.Runs > runs {
				t.Fatalf("job %s ran %d times, want %d", job, s.Runs, runs)
			}
			return s
		}
	}
	t.Fatalf("job %s did not complete run %d: %+v", job, runs, jd.status(t, job))
	return daemon.Status{}
}

// snapshotsOf returns the sorted names of the snapshots of fs.
func snapshotsOf(t *testing.T, fs string) []string {
	t.Helper()
	var s []string
	for _, v := range versions(t, fs) {
		if v.Type == zfs.Snapshot {
			s = append(s, v.Name)
		}
	}
	slices.Sort(s)
	return s
}

// snapJobConfig is a snap job as the seed's garage-data-zfs flow would run
// it: periodic snapshots with a prefix, pruned locally with a grid; other
// snapshots are kept.
const snapJobConfig = `global:
  control:
    sockpath: %s
jobs:
  - name: garage_snap
    type: snap
    filesystems: {
      "src/home<": true
    }
    snapshotting:
      type: periodic
      prefix: cairn_
      interval: 10m
    pruning:
      keep:
        - type: grid
          grid: 1x1h(keep=all) | 24x1h | 7x1d
          regex: "^cairn_"
        - type: regex
          negate: true
          regex: "^cairn_"
`

// TestDaemonSnapJobZFS runs a snap job on real ZFS with faked times: a round
// every 20 minutes for 100 minutes, then every 8 hours for 16 hours. After each
// round both filesystems hold exactly what the retention package's grid keeps
// of their cairn_ snapshots, and the snapshot not made by the job stays.
func TestDaemonSnapJobZFS(t *testing.T) {
	testenv.ZPool(t, "src")
	sh(t, "zfs create src/home && zfs create src/home/a && zfs snapshot src/home@manual")
	grid, err := retention.ParseGrid("1x1h(keep=all) | 24x1h | 7x1d", "^cairn_")
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	clock := newFakeClock(now)
	sock := filepath.Join(t.TempDir(), "control")
	jd := startJobDaemon(t, fmt.Sprintf(snapJobConfig, sock), sock, "cairn_", clock)
	want := map[string][]string{"src/home": {"manual"}, "src/home/a": nil}
	destroyed := 0
	for i := range 8 {
		// What each filesystem holds after this round, by the grid.
		name := zfsrepl.SnapshotName("cairn_", "", now)
		for fs, have := range want {
			items := []retention.Item{{Name: name, Created: now}}
			var others []string
			for _, n := range have {
				if s, ok := strings.CutPrefix(n, "cairn_"); ok {
					ts, err := time.Parse(zfsrepl.DenseTimestamp, s)
					if err != nil {
						t.Fatal(err)
					}
					items = append(items, retention.Item{Name: n, Created: ts})
				} else {
					others = append(others, n)
				}
			}
			keep, drop := grid.Apply(now, items)
			destroyed += len(drop)
			next := others
			for _, it := range keep {
				next = append(next, it.Name)
			}
			slices.Sort(next)
			want[fs] = next
		}
		if i > 0 {
			clock.Set(t, now) // the round of the first is at the daemon's start
		}
		s := jd.waitRuns(t, "garage_snap", i+1)
		if s.LastError != "" || s.State != daemon.StateIdle || s.Snapshot == nil || s.Snapshot.Name != name || len(s.Snapshot.Taken) != 2 {
			t.Fatalf("round %d: status %+v", i, s)
		}
		for fs, w := range want {
			if got := snapshotsOf(t, fs); !slices.Equal(got, w) {
				t.Fatalf("round %d: %s holds %v, the grid keeps %v", i, fs, got, w)
			}
		}
		if i < 5 {
			now = now.Add(20 * time.Minute)
		} else {
			now = now.Add(8 * time.Hour)
		}
	}
	if destroyed == 0 {
		t.Fatal("the test never pruned")
	}
}

// stallPushConfig is a push job with a sender that keeps its 3 newest
// snapshots, snapshotting every 10 minutes; stallSinkConfig its sink.
const stallPushConfig = `global:
  control:
    sockpath: %s
jobs:
  - name: push
    type: push
    connect:
      type: tcp
      address: %q
    filesystems: {
      "src/stall": true
    }
    snapshotting:
      type: periodic
      prefix: zrepl_
      interval: 10m
    pruning:
      keep_sender:
        - type: last_n
          count: 3
      keep_receiver:
        - type: last_n
          count: 100
`

const stallSinkConfig = `global:
  control:
    sockpath: %s
jobs:
  - name: sink
    type: sink
    root_fs: dst/zrepl
    serve:
      type: tcp
      listen: %q
      clients: {
        "127.0.0.1": "garage"
      }
`

// TestDaemonStalledSink stops the sink for 4 snapshot rounds of a push job
// whose sender keeps its last 3 snapshots: each round's run fails (status
// error), sender pruning goes on but keeps the replication cursor's snapshot
// and bookmark. When the sink is back, the next run replicates
// incrementally from the cursor: no full send, the receiver's first snapshot
// untouched, the newest equal to the sender's.
func TestDaemonStalledSink(t *testing.T) {
	pools(t)
	sh(t, "zfs create src/stall")
	writeRandom(t, "/src/stall/f0", 1<<20, 20)
	dir := t.TempDir()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	sinkSock, pushSock := filepath.Join(dir, "sink.sock"), filepath.Join(dir, "push.sock")
	sinkText := fmt.Sprintf(stallSinkConfig, sinkSock, addr)
	sink := startJobDaemon(t, sinkText, sinkSock, "zrepl_", nil)
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	clock := newFakeClock(now)
	push := startJobDaemon(t, fmt.Sprintf(stallPushConfig, pushSock, addr), pushSock, "zrepl_", clock)
	const rfs = recvRoot + "/src/stall"
	first := zfsrepl.SnapshotName("zrepl_", "", now)
	if s := push.waitRuns(t, "push", 1); s.LastError != "" {
		t.Fatalf("first run: %+v", s)
	}
	if got := snapshotsOf(t, rfs); !slices.Equal(got, []string{first}) {
		t.Fatalf("receiver holds %v after the first run", got)
	}
	var before zfs.Version
	for _, v := range versions(t, rfs) {
		if v.Name == first && v.Type == zfs.Snapshot {
			before = v
		}
	}

	sink.stop(t)
	taken := []string{first}
	for i := 1; i <= 4; i++ {
		writeRandom(t, fmt.Sprintf("/src/stall/f%d", i), 256<<10, uint64(20+i))
		now = now.Add(10 * time.Minute)
		taken = append(taken, zfsrepl.SnapshotName("zrepl_", "", now))
		clock.Set(t, now)
		s := push.waitRuns(t, "push", 1+i)
		if s.State != daemon.StateError || s.LastError == "" {
			t.Fatalf("round %d with the sink stopped: %+v", i, s)
		}
		// The 3 newest, and the cursor's snapshot.
		want := append([]string{first}, taken[max(1, len(taken)-3):]...)
		if got := snapshotsOf(t, "src/stall"); !slices.Equal(got, want) {
			t.Fatalf("round %d: sender keeps %v, want %v", i, got, want)
		}
		if i >= 3 { // last_n 3 would destroy the cursor's snapshot: status says why it stays
			var protected []string
			for _, p := range s.Prune {
				if p.Side == zfsrepl.SideSender {
					protected = p.Protected
				}
			}
			if !slices.Contains(protected, "@"+first+": replication cursor") || s.Pruned[zfsrepl.SideSender] != min(1, i-3) {
				t.Fatalf("round %d: sender pruning %+v, pruned %v", i, s.Prune, s.Pruned)
			}
		}
	}
	var cursor, base *zfs.Version
	for _, v := range versions(t, "src/stall") {
		switch {
		case v.Type == zfs.Bookmark && zfsrepl.IsCursor(v.Name, "push"):
			cursor = &v
		case v.Type == zfs.Snapshot && v.Name == first:
			base = &v
		}
	}
	if cursor == nil || base == nil || cursor.GUID != base.GUID {
		t.Fatalf("sender's cursor %v, base %v", cursor, base)
	}

	startJobDaemon(t, sinkText, sinkSock, "zrepl_", nil)
	if err := push.ctl.Wakeup(context.Background(), "push"); err != nil {
		t.Fatal(err)
	}
	s := push.waitRuns(t, "push", len(taken)+1)
	if s.State != daemon.StateIdle || s.LastError != "" || s.Replication == nil || len(s.Replication.Filesystems) != 1 {
		t.Fatalf("after the sink came back: %+v", s)
	}
	fr := s.Replication.Filesystems[0]
	if len(fr.Steps) != 3 || fr.Steps[0].From != "@"+first {
		t.Fatalf("steps %+v", fr.Steps)
	}
	for _, st := range fr.Steps {
		if st.Kind != zfsrepl.StepIncremental {
			t.Fatalf("a %s step after the stall: %+v", st.Kind, fr.Steps)
		}
	}
	newest := taken[len(taken)-1]
	if got, want := snapshotsOf(t, rfs), append([]string{first}, taken[len(taken)-3:]...); !slices.Equal(got, want) {
		t.Fatalf("receiver holds %v, want %v", got, want)
	}
	for _, v := range versions(t, rfs) {
		if v.Name == first && v.Type == zfs.Snapshot && (v.GUID != before.GUID || v.CreateTXG != before.CreateTXG) {
			t.Fatalf("the receiver's %s changed: %+v, was %+v", first, v, before)
		}
	}
	if a, b := snapshotHash(t, "src/stall@"+newest), snapshotHash(t, rfs+"@"+newest); a != b {
		t.Fatal("the newest snapshot's data differs")
	}
	// The cursor moved: the old base goes with the next pruning.
	if got := snapshotsOf(t, "src/stall"); !slices.Equal(got, taken[len(taken)-3:]) {
		t.Fatalf("sender keeps %v after the catch-up", got)
	}
}
