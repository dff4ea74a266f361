package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/zfsrepl"
	"github.com/cairn-backup/cairn/zfsrepl/config"
	"github.com/cairn-backup/cairn/zfsrepl/internal/memzfs"
	"github.com/cairn-backup/cairn/zfsrepl/transport"
	"github.com/cairn-backup/cairn/zfsrepl/zfs"
)

// stateConfig: a push job whose only snapshot round (at start; the interval
// is an hour) runs a pre-snapshot hook the test holds, a sink, and a snap
// job whose fatal pre-snapshot hook fails.
const stateConfig = `
global:
  control:
    sockpath: %s
jobs:
  - name: push
    type: push
    connect:
      type: tcp
      address: %q
    filesystems: {
      "tank/data": true
    }
    snapshotting:
      type: periodic
      prefix: zrepl_
      interval: 1h
      hooks:
        - type: command
          path: %s
          timeout: 120s
    pruning:
      keep_sender:
        - type: last_n
          count: 1
      keep_receiver:
        - type: last_n
          count: 10
  - name: sink
    type: sink
    root_fs: wdc
    serve:
      type: tcp
      listen: "127.0.0.1:0"
      clients: {
        "127.0.0.1": "client"
      }
  - name: snap
    type: snap
    filesystems: {
      "tank/home": true
    }
    snapshotting:
      type: periodic
      prefix: snap_
      interval: 1h
      hooks:
        - type: command
          path: %s
          err_is_fatal: true
    pruning:
      keep:
        - type: last_n
          count: 5
`

// gate holds callers until opened, or makes them fail.
type gate struct {
	mu      sync.Mutex
	ch      chan struct{} // nil: pass
	entered chan struct{} // closed when a caller waits
	fail    error
	inside  int // receives running now (heldReceiver)
}

// hold makes the next callers wait until open.
func (g *gate) hold() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.ch, g.entered = make(chan struct{}), make(chan struct{})
}

func (g *gate) open() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.ch != nil {
		close(g.ch)
		g.ch = nil
	}
}

func (g *gate) setFail(err error) { g.mu.Lock(); defer g.mu.Unlock(); g.fail = err }

// pass waits while the gate is held, then returns its failure.
func (g *gate) pass(ctx context.Context) error {
	g.mu.Lock()
	ch, entered, fail := g.ch, g.entered, g.fail
	if ch != nil {
		select {
		case <-entered:
		default:
			close(entered)
		}
	}
	g.mu.Unlock()
	if ch != nil {
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return fail
}

// waitLeft waits until no receive runs behind the gate (a held receive of
// an aborted client has ended on the sink too).
func (g *gate) waitLeft(t *testing.T, what string) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		g.mu.Lock()
		n := g.inside
		g.mu.Unlock()
		if n == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("a caller still waits at the %s gate", what)
		}
	}
}

// waitEntered waits until a caller waits at the held gate.
func (g *gate) waitEntered(t *testing.T, what string) {
	t.Helper()
	g.mu.Lock()
	entered := g.entered
	g.mu.Unlock()
	select {
	case <-entered:
	case <-time.After(30 * time.Second):
		t.Fatalf("nothing reached the %s gate", what)
	}
}

// heldReceiver is a sink's receiver whose streams wait at a gate.
type heldReceiver struct {
	*memzfs.Receiver
	g *gate
}

func (r heldReceiver) Receive(ctx context.Context, req zfsrepl.ReceiveRequest, stream io.Reader) error {
	r.g.mu.Lock()
	r.g.inside++
	r.g.mu.Unlock()
	defer func() { r.g.mu.Lock(); r.g.inside--; r.g.mu.Unlock() }()
	if err := r.g.pass(ctx); err != nil {
		return fmt.Errorf("receive refused by the test: %w", err)
	}
	return r.Receiver.Receive(ctx, req, stream)
}

// heldLocal is a push job's local side whose destroys wait at a gate.
type heldLocal struct {
	Local
	g *gate
}

func (l heldLocal) DestroySnapshots(ctx context.Context, fs string, snaps []zfs.Version) error {
	if err := l.g.pass(ctx); err != nil {
		return err
	}
	return l.Local.DestroySnapshots(ctx, fs, snaps)
}

// socketState reads a job's state and last error from the control socket's
// JSON, the document `cairn-zrepl status --json` prints.
func socketState(t *testing.T, sock, job string) (state, lastError string, runs int) {
	t.Helper()
	c := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", sock)
	}}, Timeout: 10 * time.Second}
	resp, err := c.Get("http://daemon/status")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var st []map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		t.Fatal(err)
	}
	for _, s := range st {
		if s["name"] == job {
			state, _ = s["state"].(string)
			lastError, _ = s["last_error"].(string)
			n, _ := s["runs"].(float64)
			return state, lastError, int(n)
		}
	}
	t.Fatalf("no job %s in %v", job, st)
	return
}

// waitState waits until the job's state (in the socket's JSON) is want.
func waitState(t *testing.T, sock, job, want string) (lastError string, runs int) {
	t.Helper()
	var got string
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if got, lastError, runs = socketState(t, sock, job); got == want {
			return lastError, runs
		}
	}
	t.Fatalf("job %s: state %q, want %q", job, got, want)
	return
}

// TestDaemonStatusStates follows a push job through its states as `status
// --json` shows them, each held by the test until seen: snapshotting (a
// pre-snapshot hook waits for a file), replicating (the sink holds the
// stream), pruning (the sender's destroy waits), idle; then a run whose
// receive fails leaves the job in error with its last error, and the next
// good run clears both. A snap job whose fatal pre-snapshot hook fails is in
// error with the hook's failure.
func TestDaemonStatusStates(t *testing.T) {
	dir := t.TempDir()
	hook := filepath.Join(dir, "hold.sh")
	if err := os.WriteFile(hook, fmt.Appendf(nil, "#!/bin/sh\n[ \"$ZREPL_HOOKTYPE\" = pre_snapshot ] || exit 0\nwhile [ ! -e %s/go ]; do sleep 0.01; done\n", dir), 0o755); err != nil {
		t.Fatal(err)
	}
	failHook := filepath.Join(dir, "fail.sh")
	if err := os.WriteFile(failHook, []byte("#!/bin/sh\necho flush failed >&2\nexit 3\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	src, dst, home := memzfs.New(1000), memzfs.New(5000), memzfs.New(9000)
	for _, p := range []*memzfs.Pool{src, dst, home} {
		p.PayloadSize = 64
	}
	src.CreateFS("tank/data")
	src.Snapshot("tank/data", "old")
	dst.CreateFS("wdc/client")
	home.CreateFS("tank/home")
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "control")
	cfg, err := config.Parse(fmt.Appendf(nil, stateConfig, sock, l.Addr().String(), hook, failHook))
	if err != nil {
		t.Fatal(err)
	}
	recvGate, destroyGate := &gate{}, &gate{}
	env := Env{
		Local: func(j *config.Job) (Local, error) {
			f := j.Filter
			if j.Type == "snap" {
				return &memzfs.Sender{Pool: home, Job: j.Name, Filter: f}, nil
			}
			return heldLocal{&memzfs.Sender{Pool: src, Job: j.Name, Filter: f}, destroyGate}, nil
		},
		Remote: func(j *config.Job) (zfsrepl.Receiver, io.Closer, error) {
			c, err := j.Dial(transport.ClientOptions{})
			return c, c, err
		},
		Sink: func(j *config.Job, s *transport.Server) (*http.Server, net.Listener, bool, error) {
			s.Receivers = func(id string) (zfsrepl.Receiver, error) {
				return heldReceiver{&memzfs.Receiver{Pool: dst, Root: j.RootFS + "/" + id, Job: j.Name}, recvGate}, nil
			}
			srv, tlsOn, err := j.SinkServer(s)
			return srv, l, tlsOn, err
		},
	}
	recvGate.hold()
	destroyGate.hold()
	d, err := New(cfg, env, slog.New(slog.NewTextHandler(&tlog{t}, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx, sock) }()
	t.Cleanup(func() {
		recvGate.open()
		destroyGate.open()
		cancel()
		<-done
	})
	for i := 0; ; i++ {
		if _, err := NewControl(sock).Status(ctx); err == nil {
			break
		} else if i > 500 {
			t.Fatalf("control socket: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}

	// The snap job's hook failed: its run is an error, though its pruning succeeded.
	if le, runs := waitState(t, sock, "snap", StateError); runs != 1 || !strings.Contains(le, "flush failed") && !strings.Contains(le, "exit status 3") {
		t.Fatalf("snap job: runs %d, last error %q", runs, le)
	}
	if len(home.Versions("tank/home")) != 0 {
		t.Fatalf("the snap job snapshotted despite its fatal hook: %v", home.Versions("tank/home"))
	}

	waitState(t, sock, "push", StateSnapshotting)
	if err := os.WriteFile(filepath.Join(dir, "go"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	recvGate.waitEntered(t, "receive")
	waitState(t, sock, "push", StateReplicating)
	recvGate.open()
	destroyGate.waitEntered(t, "destroy")
	waitState(t, sock, "push", StatePruning)
	destroyGate.open()
	if le, runs := waitState(t, sock, "push", StateIdle); le != "" || runs != 1 {
		t.Fatalf("after the first run: runs %d, last error %q", runs, le)
	}
	if got := snapNames(src.Versions("tank/data")); len(got) != 1 || !strings.HasPrefix(got[0], "zrepl_") {
		t.Fatalf("sender keeps %v", got)
	}
	if got := snapNames(dst.Versions("wdc/client/tank/data")); len(got) != 1 || !strings.HasPrefix(got[0], "zrepl_") {
		t.Fatalf("receiver has %v", got)
	}

	// A failed run shows as error with its cause until a run succeeds.
	recvGate.setFail(errors.New("disk full"))
	src.Snapshot("tank/data", "manual1")
	if err := NewControl(sock).Wakeup(ctx, "push"); err != nil {
		t.Fatal(err)
	}
	if le, runs := waitState(t, sock, "push", StateError); runs != 2 || !strings.Contains(le, "disk full") {
		t.Fatalf("failed run: runs %d, last error %q", runs, le)
	}
	recvGate.setFail(nil)
	if err := NewControl(sock).Wakeup(ctx, "push"); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		st, le, runs := socketState(t, sock, "push")
		if runs == 3 {
			if st != StateIdle || le != "" {
				t.Fatalf("after a good run: state %q, last error %q", st, le)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the third run did not end: state %q", st)
		}
	}
	if s := d.Status()[0]; s.Name != "push" || s.Errors != 1 || s.LastSuccess.IsZero() {
		t.Fatalf("push status %+v", s)
	}
	if got := snapNames(dst.Versions("wdc/client/tank/data")); len(got) != 2 || got[0] != "manual1" {
		t.Fatalf("receiver has %v", got)
	}

	// signal reset aborts the running run: error, then the next run replicates.
	ctl := NewControl(sock)
	if aborted, err := ctl.Reset(ctx, "push"); err != nil || aborted {
		t.Fatalf("reset of an idle job: %v %v", aborted, err)
	}
	if _, err := ctl.Reset(ctx, "nope"); err == nil || !strings.Contains(err.Error(), "no such job") {
		t.Fatalf("reset of an unknown job: %v", err)
	}
	recvGate.hold()
	src.Snapshot("tank/data", "manual2")
	if err := ctl.Wakeup(ctx, "push"); err != nil {
		t.Fatal(err)
	}
	recvGate.waitEntered(t, "receive")
	waitState(t, sock, "push", StateReplicating)
	if aborted, err := ctl.Reset(ctx, "push"); err != nil || !aborted {
		t.Fatalf("reset of a replicating job: %v %v", aborted, err)
	}
	if le, runs := waitState(t, sock, "push", StateError); runs != 4 || !strings.Contains(le, ErrReset.Error()) {
		t.Fatalf("after reset: runs %d, last error %q", runs, le)
	}
	if s := d.Status()[0]; s.Prune != nil || s.Replication == nil || s.Replication.Filesystems[0].State == zfsrepl.StateDone {
		t.Fatalf("the reset run replicated or pruned: %+v", s)
	}
	// The aborted run's receive may still complete on the sink (its stream
	// was sent whole): let it end before the next run lists the receiver,
	// or the two races (zrepl's sink behaves the same).
	recvGate.open()
	recvGate.waitLeft(t, "receive")
	if err := ctl.Wakeup(ctx, "push"); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		st, le, runs := socketState(t, sock, "push")
		if runs == 5 {
			if st != StateIdle || le != "" {
				t.Fatalf("after the reset, a good run: state %q, last error %q", st, le)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the fifth run did not end: state %q", st)
		}
	}
	if got := snapNames(dst.Versions("wdc/client/tank/data")); !slices.Contains(got, "manual2") {
		t.Fatalf("receiver has %v", got)
	}
}
