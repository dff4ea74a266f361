// The daemon's end-to-end test runs five cycles of the seed's jobs and a
// resume on real ZFS: minutes in the emulated (TCG) guest, so make test gives
// go test a longer -timeout than its default 10 minutes (the guest binary is
// built without cgo, so never with the race detector). Alone:
//
//	go test -run TestDaemonSeed ./zfsrepl/vmtest/

package vmtest

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/retention"
	"github.com/cairn-backup/cairn/zfsrepl"
	"github.com/cairn-backup/cairn/zfsrepl/config"
	"github.com/cairn-backup/cairn/zfsrepl/daemon"
	"github.com/cairn-backup/cairn/zfsrepl/transport"
	"github.com/cairn-backup/cairn/zfsrepl/transport/transporttest"
	"github.com/cairn-backup/cairn/zfsrepl/zfs"
)

// seedConfig is the seed's push and sink jobs in zrepl's format (manual
// snapshotting: the test takes snapshots with faked times).
const seedConfig = `global:
  control:
    sockpath: %s
jobs:
  - name: push
    type: push
    connect:
      type: tls
      address: %q
      ca: %s
      cert: %s
      key: %s
      server_cn: backup
    filesystems: {
      "src/garage<": true
    }
    snapshotting:
      type: manual
    pruning:
      keep_sender:
        - type: last_n
          count: 10
      keep_receiver:
        - type: grid
          grid: 1x1h(keep=all) | 24x1h | 30x1d | 6x30d
  - name: sink
    type: sink
    root_fs: dst/zrepl
    serve:
      type: tls
      listen: %q
      ca: %s
      cert: %s
      key: %s
      client_cns: [garage]
`

// fakeTime gives zrepl_<dense UTC> snapshots the time of their name, so
// that the test can run days of a 10-minute schedule in seconds.
func fakeTime(vs []zfs.Version) []zfs.Version {
	for i, v := range vs {
		if s, ok := strings.CutPrefix(v.Name, "zrepl_"); ok {
			if t, err := time.Parse(zfsrepl.DenseTimestamp, s); err == nil {
				vs[i].Creation = t
			}
		}
	}
	return vs
}

type fakeLocal struct{ daemon.Local }

func (f fakeLocal) ListVersions(ctx context.Context, fs string) ([]zfs.Version, error) {
	vs, err := f.Local.ListVersions(ctx, fs)
	return fakeTime(vs), err
}

// fakeRemote fakes times and can slow streams down.
type fakeRemote struct {
	zfsrepl.Receiver
	slow *atomic.Bool
}

func (f fakeRemote) ListVersions(ctx context.Context, fs string) ([]zfs.Version, error) {
	vs, err := f.Receiver.ListVersions(ctx, fs)
	return fakeTime(vs), err
}

func (f fakeRemote) Receive(ctx context.Context, req zfsrepl.ReceiveRequest, stream io.Reader) error {
	if f.slow.Load() {
		stream = &slowReader{r: stream}
	}
	return f.Receiver.Receive(ctx, req, stream)
}

type slowReader struct{ r io.Reader }

func (s *slowReader) Read(p []byte) (int, error) {
	time.Sleep(20 * time.Millisecond)
	return s.r.Read(p[:min(len(p), 64<<10)])
}

type seedDaemon struct {
	cfg    *config.Config
	sock   string
	clock  *atomic.Int64 // unix seconds of the fake clock
	slow   atomic.Bool
	cancel context.CancelFunc
	done   chan struct{} // closed when Run returned
	runErr error
	ctl    *daemon.Control
}

func newSeedDaemon(t *testing.T) *seedDaemon {
	t.Helper()
	dir := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	ca := transporttest.NewCA(t, "daemon CA")
	caf := write("ca.crt", ca.CAPEM())
	sc, sk := transporttest.PEM(t, ca.Issue(t, "backup", true))
	cc, ck := transporttest.PEM(t, ca.Issue(t, "garage", false))
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	sd := &seedDaemon{sock: filepath.Join(dir, "control"), clock: &atomic.Int64{}}
	text := fmt.Sprintf(seedConfig, sd.sock, addr, caf, write("c.crt", cc), write("c.key", ck), addr, caf, write("s.crt", sc), write("s.key", sk))
	if sd.cfg, err = config.Parse([]byte(text)); err != nil {
		t.Fatal(err)
	}
	sd.ctl = daemon.NewControl(sd.sock)
	return sd
}

func (sd *seedDaemon) now() time.Time { return time.Unix(sd.clock.Load(), 0).UTC() }

// start runs a daemon of the configuration until stop.
func (sd *seedDaemon) start(t *testing.T) {
	t.Helper()
	runner := &zfs.Runner{}
	env := daemon.Env{
		Now: sd.now,
		Local: func(j *config.Job) (daemon.Local, error) {
			f := j.Filter
			return fakeLocal{&zfsrepl.LocalSender{ZFS: runner, Job: j.Name, Filter: f}}, nil
		},
		Remote: func(j *config.Job) (zfsrepl.Receiver, io.Closer, error) {
			c, err := j.Dial(transport.ClientOptions{})
			if err != nil {
				return nil, nil, err
			}
			return fakeRemote{Receiver: c, slow: &sd.slow}, c, nil
		},
	}
	d, err := daemon.New(sd.cfg, env, slog.New(slog.NewTextHandler(tlog{t}, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	sd.cancel, sd.done = cancel, done
	go func() {
		sd.runErr = d.Run(ctx, sd.sock)
		close(done)
	}()
	// Stop it before the pools go, also when the test fails.
	t.Cleanup(func() {
		cancel()
		<-done
	})
	for i := 0; ; i++ {
		st, err := sd.ctl.Status(context.Background())
		if err == nil && slices.ContainsFunc(st, func(s daemon.Status) bool { return s.Name == "sink" && s.State == daemon.StateServing }) {
			return
		}
		if i > 300 {
			t.Fatalf("daemon did not start: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (sd *seedDaemon) stop(t *testing.T) {
	t.Helper()
	sd.cancel()
	select {
	case <-sd.done:
		if sd.runErr != nil {
			t.Fatalf("daemon: %v", sd.runErr)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("daemon did not stop")
	}
}

func (sd *seedDaemon) push(t *testing.T) daemon.Status {
	t.Helper()
	st, err := sd.ctl.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	i := slices.IndexFunc(st, func(s daemon.Status) bool { return s.Name == "push" })
	return st[i]
}

// TestDaemonSeed runs the seed's push and sink jobs on real ZFS over mutual
// TLS for 5 cycles with faked snapshot times (10 minutes apart, then 6
// hours): after each, the receiver keeps exactly what the grid keeps and the
// sender its last 10. Then a daemon stopped in the middle of a step leaves a
// resumable receive that the next daemon resumes.
func TestDaemonSeed(t *testing.T) {
	pools(t)
	sh(t, "zfs create src/garage && zfs create src/garage/data")
	writeRandom(t, "/src/garage/data/f", 1<<20, 11)
	sd := newSeedDaemon(t)
	sd.start(t)
	grid, err := retention.ParseGrid("1x1h(keep=all) | 24x1h | 30x1d | 6x30d", "")
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	const rfs = recvRoot + "/src/garage/data"
	wakeup := func(i int) daemon.Status {
		before := sd.push(t).Runs
		if err := sd.ctl.Wakeup(context.Background(), "push"); err != nil {
			t.Fatal(err)
		}
		for deadline := time.Now().Add(120 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			if s := sd.push(t); s.Runs > before && (s.State == daemon.StateIdle || s.State == daemon.StateError) {
				return s
			}
		}
		t.Fatalf("cycle %d: the push job did not run", i)
		return daemon.Status{}
	}
	snapNames := func(fs string) []string {
		var s []string
		for _, v := range versions(t, fs) {
			if v.Type == zfs.Snapshot {
				s = append(s, v.Name)
			}
		}
		slices.Sort(s)
		return s
	}
	for i := range 5 {
		sd.clock.Store(now.Unix())
		name := zfsrepl.SnapshotName("zrepl_", "", now)
		writeRandom(t, "/src/garage/data/f", 64<<10, uint64(i))
		sh(t, "zfs snapshot -r src/garage@"+name)
		var items []retention.Item
		var rv []zfs.Version
		if i > 0 { // the first run creates the receiver's filesystem
			rv = versions(t, rfs)
		}
		for _, v := range fakeTime(rv) {
			if v.Type == zfs.Snapshot {
				items = append(items, retention.Item{Name: v.Name, Created: v.Creation})
			}
		}
		items = append(items, retention.Item{Name: name, Created: now})
		keep, _ := grid.Apply(now, items)
		var want []string
		for _, it := range keep {
			want = append(want, it.Name)
		}
		slices.Sort(want)
		s := wakeup(i)
		if s.LastError != "" {
			t.Fatalf("cycle %d: %s", i, s.LastError)
		}
		if got := snapNames(rfs); !slices.Equal(got, want) {
			t.Fatalf("cycle %d: receiver keeps %v, the grid %v", i, got, want)
		}
		if got := snapNames("src/garage/data"); len(got) != min(i+1, 10) || got[len(got)-1] != name {
			t.Fatalf("cycle %d: sender keeps %v", i, got)
		}
		if i < 2 {
			now = now.Add(10 * time.Minute)
		} else {
			now = now.Add(6 * time.Hour)
		}
	}

	// Stop the daemon in the middle of a step (past the transport's first
	// 1 MiB chunks, so that zfs receive has something to keep).
	sd.clock.Store(now.Unix())
	writeRandom(t, "/src/garage/data/big", 16<<20, 99)
	last := zfsrepl.SnapshotName("zrepl_", "", now)
	sh(t, "zfs snapshot -r src/garage@"+last)
	sd.slow.Store(true)
	if err := sd.ctl.Wakeup(context.Background(), "push"); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(120 * time.Second); sd.push(t).StepBytes < 6<<20; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the big step did not start: %+v", sd.push(t))
		}
	}
	sd.stop(t)
	tok := ""
	for deadline := time.Now().Add(60 * time.Second); (tok == "" || tok == "-") && time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		tok = sh(t, "zfs get -H -o value receive_resume_token "+rfs)
	}
	if tok == "-" || tok == "" {
		t.Fatal("no receive_resume_token after the daemon stopped mid-step")
	}
	sd.slow.Store(false)
	sd.start(t)
	s := wakeup(99)
	if s.LastError != "" || s.Replication == nil {
		t.Fatalf("after restart: %+v", s)
	}
	var fr *zfsrepl.FilesystemReport
	for i := range s.Replication.Filesystems {
		if s.Replication.Filesystems[i].Filesystem == "src/garage/data" {
			fr = &s.Replication.Filesystems[i]
		}
	}
	if fr == nil || len(fr.Steps) == 0 || fr.Steps[0].Kind != zfsrepl.StepResume || fr.Bytes >= 16<<20 {
		t.Fatalf("not resumed: %+v", fr)
	}
	if a, b := snapshotHash(t, "src/garage/data@"+last), snapshotHash(t, rfs+"@"+last); a != b {
		t.Fatal("data differs after the resume")
	}
}

// tlog writes the daemon's log lines to the test's log.
type tlog struct{ t *testing.T }

func (l tlog) Write(p []byte) (int, error) {
	l.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}
