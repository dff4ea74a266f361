package daemon

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/retention"
	"github.com/cairn-backup/cairn/zfsrepl"
	"github.com/cairn-backup/cairn/zfsrepl/config"
	"github.com/cairn-backup/cairn/zfsrepl/internal/memzfs"
	"github.com/cairn-backup/cairn/zfsrepl/transport"
	"github.com/cairn-backup/cairn/zfsrepl/zfs"
)

const testConfig = `
global:
  logging:
    - type: stdout
      level: info
      format: json
  monitoring:
    - type: prometheus
      listen: "127.0.0.1:0"
  control:
    sockpath: %s
jobs:
  - name: garage_push
    type: push
    connect:
      type: tcp
      address: %q
    filesystems: {
      "tank/garage/data": true
    }
    snapshotting:
      type: manual
    pruning:
      keep_sender:
        - type: not_replicated
        - type: last_n
          count: 10
      keep_receiver:
        - type: grid
          grid: 1x1h(keep=all) | 24x1h | 30x1d | 6x30d
          regex: "^zrepl_"
  - name: sink
    type: sink
    root_fs: wdc/zrepl
    serve:
      type: tcp
      listen: "127.0.0.1:0"
      clients: {
        "127.0.0.1": "garage"
      }
  - name: home_snap
    type: snap
    filesystems: {
      "tank/home<": true
    }
    snapshotting:
      type: periodic
      prefix: snap_
      interval: 1s
      utc_timestamp_format: unix-seconds
    pruning:
      keep:
        - type: last_n
          count: 2
`

type clock struct {
	mu sync.Mutex
	t  time.Time
}

// now returns the fake time, or the real one when none is set.
func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.t.IsZero() {
		return time.Now()
	}
	return c.t
}
func (c *clock) set(t time.Time) { c.mu.Lock(); defer c.mu.Unlock(); c.t = t }

type world struct {
	src, dst, home *memzfs.Pool
	ctl            *Control
	d              *Daemon
	clk            *clock
	cancel         context.CancelFunc
	done           chan error
}

// start runs the daemon of testConfig over memzfs pools; with fake, its
// clock stays where the test sets it.
func start(t *testing.T, fake bool) *world {
	t.Helper()
	w := &world{src: memzfs.New(1000), dst: memzfs.New(5000), home: memzfs.New(9000), clk: &clock{}}
	if fake {
		w.clk.set(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	}
	w.src.PayloadSize, w.dst.PayloadSize = 64, 64
	w.src.CreateFS("tank/garage/data")
	w.dst.CreateFS("wdc/zrepl/garage")
	w.home.CreateFS("tank/home")
	w.home.Now = time.Now
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(t.TempDir(), "control")
	cfg, err := config.Parse(fmt.Appendf(nil, testConfig, sock, l.Addr().String()))
	if err != nil {
		t.Fatal(err)
	}
	env := Env{
		Now: w.clk.now,
		Local: func(j *config.Job) (Local, error) {
			f := j.Filter
			if j.Type == "snap" {
				return &memzfs.Sender{Pool: w.home, Job: j.Name, Filter: f}, nil
			}
			return &memzfs.Sender{Pool: w.src, Job: j.Name, Filter: f}, nil
		},
		Remote: func(j *config.Job) (zfsrepl.Receiver, io.Closer, error) {
			c, err := j.Dial(transport.ClientOptions{})
			return c, c, err
		},
		Sink: func(j *config.Job, s *transport.Server) (*http.Server, net.Listener, bool, error) {
			s.Receivers = func(id string) (zfsrepl.Receiver, error) {
				if err := transport.ValidateIdentity(id); err != nil {
					return nil, err
				}
				return &memzfs.Receiver{Pool: w.dst, Root: j.RootFS + "/" + id, Job: j.Name}, nil
			}
			srv, tlsOn, err := j.SinkServer(s)
			return srv, l, tlsOn, err
		},
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(&tlog{t}, nil))
	}
	w.d, err = New(cfg, env, log)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	w.cancel, w.done = cancel, make(chan error, 1)
	go func() { w.done <- w.d.Run(ctx, sock) }()
	w.ctl = NewControl(sock)
	for i := 0; ; i++ {
		if _, err := w.ctl.Status(context.Background()); err == nil {
			break
		} else if i > 200 {
			t.Fatalf("control socket: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Cleanup(w.stop)
	return w
}

type tlog struct{ t *testing.T }

func (l *tlog) Write(p []byte) (int, error) {
	l.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

func (w *world) stop() {
	if w.cancel != nil {
		w.cancel()
		<-w.done
		w.cancel = nil
	}
}

func (w *world) status(t *testing.T, job string) Status {
	t.Helper()
	st, err := w.ctl.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range st {
		if s.Name == job {
			return s
		}
	}
	t.Fatalf("no status for %s: %+v", job, st)
	return Status{}
}

// wakeup wakes the push job through the control socket and waits for the run.
func (w *world) wakeup(t *testing.T) Status {
	t.Helper()
	before := w.status(t, "garage_push").Runs
	if err := w.ctl.Wakeup(context.Background(), "garage_push"); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 1000; i++ {
		if s := w.status(t, "garage_push"); s.Runs > before && s.State == StateIdle {
			return s
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatal("the push job did not run")
	return Status{}
}

func snapNames(vs []zfs.Version) []string {
	var s []string
	for _, v := range vs {
		if v.Type == zfs.Snapshot {
			s = append(s, v.Name)
		}
	}
	slices.Sort(s)
	return s
}

// TestDaemonPushThroughSink drives the seed's push job through a sink over
// TCP with faked snapshot times (a snapshot every 10 minutes, then every 6
// hours): after each run the receiver keeps exactly what the grid keeps,
// the sender the 10 newest; status and metrics follow.
func TestDaemonPushThroughSink(t *testing.T) {
	w := start(t, true)
	grid, err := retention.ParseGrid("1x1h(keep=all) | 24x1h | 30x1d | 6x30d", "^zrepl_")
	if err != nil {
		t.Fatal(err)
	}
	const rfs = "wdc/zrepl/garage/tank/garage/data"
	if s := w.status(t, "sink"); s.State != StateServing || s.Listen == "" {
		t.Fatalf("sink status %+v", s)
	}
	now := w.clk.now()
	var total int64
	for i := range 60 {
		w.clk.set(now)
		w.src.SnapshotAt("tank/garage/data", zfsrepl.SnapshotName("zrepl_", "", now), now)
		// What the receiver will hold before pruning: what it has plus the new snapshot.
		pre := w.dst.Versions(rfs)
		var items []retention.Item
		for _, v := range pre {
			items = append(items, retention.Item{Name: v.Name, Created: v.Creation})
		}
		items = append(items, retention.Item{Name: zfsrepl.SnapshotName("zrepl_", "", now), Created: now})
		want, _ := grid.Apply(now, items)
		var wantNames []string
		for _, it := range want {
			wantNames = append(wantNames, it.Name)
		}
		slices.Sort(wantNames)
		s := w.wakeup(t)
		if s.LastError != "" || s.Runs != i+1 || s.Bytes == 0 || s.LastSuccess.IsZero() {
			t.Fatalf("run %d: status %+v", i, s)
		}
		total += s.Bytes
		if got := snapNames(w.dst.Versions(rfs)); !slices.Equal(got, wantNames) {
			t.Fatalf("run %d: receiver has %v, the grid keeps %v", i, got, wantNames)
		}
		if got := snapNames(w.src.Versions("tank/garage/data")); len(got) != min(i+1, 10) {
			t.Fatalf("run %d: sender has %v", i, got)
		}
		if i < 30 {
			now = now.Add(10 * time.Minute)
		} else {
			now = now.Add(6 * time.Hour)
		}
	}
	s := w.status(t, "garage_push")
	if s.TotalBytes != total || s.Pruned[zfsrepl.SideReceiver] == 0 && s.Runs < 2 {
		t.Fatalf("status %+v", s)
	}
	// Metrics.
	mfs, err := w.d.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.Metric {
			if len(m.Label) == 0 || m.Label[0].GetValue() != "garage_push" {
				continue
			}
			switch {
			case m.Counter != nil:
				seen[mf.GetName()] += m.Counter.GetValue()
			case m.Gauge != nil:
				seen[mf.GetName()] = m.Gauge.GetValue()
			case m.Histogram != nil:
				seen[mf.GetName()] += float64(m.Histogram.GetSampleCount())
			}
		}
	}
	if seen["cairn_zrepl_replication_bytes_total"] != float64(total) || seen["cairn_zrepl_pruned_snapshots_total"] == 0 ||
		seen["cairn_zrepl_last_success_timestamp_seconds"] != float64(now.Add(-6*time.Hour).Unix()) || seen["cairn_zrepl_run_duration_seconds"] != 120 {
		t.Fatalf("metrics: %v", seen)
	}
	// An unknown job.
	if err := w.ctl.Wakeup(context.Background(), "nope"); err == nil || !strings.Contains(err.Error(), "no such job") {
		t.Fatalf("wakeup of an unknown job: %v", err)
	}
}

// TestDaemonSnapJob runs the periodic snap job (1s interval): it takes
// snapshots and prunes them to the last 2; the receiver being unreachable
// shows in the push job's status.
func TestDaemonSnapJob(t *testing.T) {
	w := start(t, false)
	w.home.Snapshot("tank/home", "manual")
	deadline := time.Now().Add(10 * time.Second)
	for {
		s := w.status(t, "home_snap")
		if s.Runs >= 3 && s.Snapshot != nil {
			if s.LastError != "" || s.Pruned[zfsrepl.SideLocal] == 0 {
				t.Fatalf("snap status %+v", s)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("snap job did not run 3 times: %+v", s)
		}
		time.Sleep(50 * time.Millisecond)
	}
	w.stop()
	if got := snapNames(w.home.Versions("tank/home")); len(got) != 2 || !strings.HasPrefix(got[0], "snap_") {
		t.Fatalf("tank/home has %v", got)
	}
	for _, s := range w.d.Status() {
		if s.State != StateStopped {
			t.Fatalf("after shutdown: %+v", s)
		}
	}
}

// TestControlWithoutDaemon: a client of a socket no daemon serves says so.
func TestControlWithoutDaemon(t *testing.T) {
	_, err := NewControl(filepath.Join(t.TempDir(), "control")).Status(context.Background())
	if err == nil || !strings.Contains(err.Error(), "no daemon is listening") {
		t.Fatalf("status without a daemon: %v", err)
	}
}
