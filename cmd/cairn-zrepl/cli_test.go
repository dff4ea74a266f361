package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/zfsrepl"
	"github.com/cairn-backup/cairn/zfsrepl/config"
	"github.com/cairn-backup/cairn/zfsrepl/daemon"
	"github.com/cairn-backup/cairn/zfsrepl/zfs"
)

// fakeLocal is a push job's local side with one filesystem tank/x and one
// snapshot whose stream is size zero bytes; with block, Send's stream
// blocks until the context ends (after closing started).
type fakeLocal struct {
	daemon.Local // not called
	size         int
	block        bool
	started      chan struct{}
}

var fakeSnap = zfs.Version{Type: zfs.Snapshot, Filesystem: "tank/x", Name: "a", GUID: 7, CreateTXG: 3, Creation: time.Unix(1767225600, 0)}

func (f *fakeLocal) ListFilesystems(context.Context) ([]zfs.Filesystem, error) {
	return []zfs.Filesystem{{Name: "tank/x"}}, nil
}
func (f *fakeLocal) ListVersions(context.Context, string) ([]zfs.Version, error) {
	return []zfs.Version{fakeSnap}, nil
}
func (f *fakeLocal) HoldStep(context.Context, string, zfsrepl.Step) error    { return nil }
func (f *fakeLocal) ReleaseStep(context.Context, string, zfsrepl.Step) error { return nil }
func (f *fakeLocal) MoveCursor(context.Context, string, zfs.Version) error   { return nil }
func (f *fakeLocal) Send(ctx context.Context, _ string, _ zfsrepl.Step) (io.ReadCloser, error) {
	if f.block {
		close(f.started)
		return io.NopCloser(ctxReader{ctx}), nil
	}
	return io.NopCloser(strings.NewReader(strings.Repeat("z", f.size))), nil
}

type ctxReader struct{ ctx context.Context }

func (r ctxReader) Read([]byte) (int, error) {
	<-r.ctx.Done()
	return 0, r.ctx.Err()
}

// fakeSink receives into nothing and then has the snapshot.
type fakeSink struct {
	mu       sync.Mutex
	received int64
}

func (s *fakeSink) ListFilesystems(context.Context) ([]zfs.Filesystem, error) { return nil, nil }
func (s *fakeSink) ListVersions(context.Context, string) ([]zfs.Version, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.received > 0 {
		return []zfs.Version{fakeSnap}, nil
	}
	return nil, nil
}
func (s *fakeSink) ResumeToken(context.Context, string) (string, error) { return "", nil }
func (s *fakeSink) Receive(_ context.Context, _ zfsrepl.ReceiveRequest, r io.Reader) error {
	n, err := io.Copy(io.Discard, r)
	s.mu.Lock()
	s.received += n
	s.mu.Unlock()
	return err
}
func (s *fakeSink) DestroySnapshots(context.Context, string, []zfs.Version) error { return nil }

// fakeEnv makes jobEnv build push jobs over local and sink until the test
// ends, and returns the total wait of send.bandwidth_limit.
func fakeEnv(t *testing.T, local *fakeLocal, sink *fakeSink) *time.Duration {
	var mu sync.Mutex
	var slept time.Duration
	jobEnv = daemon.Env{
		Local: func(*config.Job) (daemon.Local, error) { return local, nil },
		Remote: func(*config.Job) (zfsrepl.Receiver, io.Closer, error) {
			return sink, nil, nil
		},
		Sleep: func(_ context.Context, d time.Duration) error {
			mu.Lock()
			defer mu.Unlock()
			slept += d
			return nil
		},
	}
	t.Cleanup(func() { jobEnv = daemon.Env{} })
	return &slept
}

const tcpPush = `jobs:
  - name: push
    type: push
    connect:
      type: tcp
      address: "127.0.0.1:1"
    filesystems: {"tank<": true}
%s    snapshotting:
      type: manual
    pruning:
      keep_sender: [{type: not_replicated}]
      keep_receiver: [{type: last_n, count: 10}]
`

func writeFile(t *testing.T, name, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestReplicateBandwidthLimit: `replicate` paces the send streams by
// send.bandwidth_limit, as the daemon does (both run daemon.Env.BuildPush).
func TestReplicateBandwidthLimit(t *testing.T) {
	for _, c := range []struct {
		send      string
		min, max  time.Duration
		limitText string
	}{
		{"    send:\n      bandwidth_limit:\n        max: 256 KiB\n        bucket_capacity: 64 KiB\n", 3500 * time.Millisecond, 5 * time.Second, "limited"},
		{"", 0, 0, "unlimited"},
	} {
		sink := &fakeSink{}
		slept := fakeEnv(t, &fakeLocal{size: 1 << 20}, sink)
		cfg := writeFile(t, "zrepl.yml", fmt.Sprintf(tcpPush, c.send))
		code, out, stderr := runCLI("replicate", "--config", cfg, "--json", "push")
		var rep zfsrepl.Report
		if err := json.Unmarshal([]byte(out), &rep); err != nil || code != 0 || sink.received != 1<<20 {
			t.Fatalf("%s: exit %d, received %d: %v\n%s\n%s", c.limitText, code, sink.received, err, out, stderr)
		}
		// 1 MiB at 256 KiB/s with a 64 KiB bucket: 3.75 s of waits.
		if *slept < c.min || *slept > c.max {
			t.Errorf("%s: waited %v, want %v..%v", c.limitText, *slept, c.min, c.max)
		}
	}
}

// TestExitCodes: one command line per exit code cairn-zrepl uses.
func TestExitCodes(t *testing.T) {
	cfg := writeFile(t, "zrepl.yml", fmt.Sprintf(tcpPush, ""))
	sock := filepath.Join(t.TempDir(), "control")

	// 0: success.
	fakeEnv(t, &fakeLocal{size: 100}, &fakeSink{})
	if code, out, stderr := runCLI("replicate", "--config", cfg, "push"); code != 0 || !strings.Contains(out, "tank/x") {
		t.Errorf("replicate: exit %d, want 0\n%s%s", code, out, stderr)
	}
	// 1: failure (no daemon listening).
	if code, _, stderr := runCLI("status", "--socket", sock); code != 1 || !strings.Contains(stderr, "cairn-zrepl: control socket: no daemon is listening") {
		t.Errorf("status without a daemon: exit %d, want 1: %s", code, stderr)
	}
	// 2: usage.
	if code, _, stderr := runCLI("replicate", "--config", cfg); code != 2 || !strings.Contains(stderr, "--help") {
		t.Errorf("replicate without a job: exit %d, want 2: %s", code, stderr)
	}
	// 130: interrupted by a signal (the context cli.Main cancels).
	local := &fakeLocal{block: true, started: make(chan struct{})}
	fakeEnv(t, local, &fakeSink{})
	ctx, cancel := context.WithCancel(context.Background())
	go func() { <-local.started; cancel() }()
	if code, _, stderr := runEnv(ctx, nil, "replicate", "--config", cfg, "push"); code != 130 || !strings.Contains(stderr, "interrupted") {
		t.Errorf("interrupted replicate: exit %d, want 130: %s", code, stderr)
	}
	// --help documents them.
	_, out, _ := runCLI("--help")
	for _, want := range []string{"Exit codes:", "  0 ", "  1 ", "  2 ", "  130 "} {
		if !strings.Contains(out, want) {
			t.Errorf("--help lacks %q:\n%s", want, out)
		}
	}
}

// TestConfigFromEnvironment: $CAIRN_ZREPL_CONFIG names the configuration
// when --config is not given; --config wins.
func TestConfigFromEnvironment(t *testing.T) {
	cfg := writeFile(t, "zrepl.yml", fmt.Sprintf(tcpPush, ""))
	env := map[string]string{"CAIRN_ZREPL_CONFIG": cfg}
	if code, out, stderr := runEnv(context.Background(), env, "configcheck"); code != 0 || !strings.Contains(out, "job push: push") {
		t.Fatalf("exit %d\n%s%s", code, out, stderr)
	}
	if code, _, stderr := runEnv(context.Background(), env, "configcheck", "--config", "/nonexistent.yml"); code != 2 || !strings.Contains(stderr, "/nonexistent.yml") {
		t.Fatalf("--config does not win: exit %d %s", code, stderr)
	}
	env["CAIRN_ZREPL_CONFIG"] = "/nonexistent.yml"
	if code, _, _ := runEnv(context.Background(), env, "status"); code != 2 {
		t.Fatalf("status with a missing named configuration: exit %d, want 2", code)
	}
}

// TestStatusMultilineError: a multi-line last error (errors.Join of a
// snapshot and a replication error, a tab in a zfs message) takes one table
// row, its first line and (…); --json has the whole text.
func TestStatusMultilineError(t *testing.T) {
	lastErr := "snapshot round: hook /etc/zrepl/hooks/flush.sh: exit status 1\nreplication: tank/x:\tcannot receive: destination has been modified\n"
	st := []daemon.Status{
		{Name: "garage_push", Type: "push", State: daemon.StateError, Runs: 3, Errors: 2, LastError: lastErr},
		{Name: "sink", Type: "sink", State: daemon.StateServing},
	}
	sock := filepath.Join(t.TempDir(), "control")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = json.NewEncoder(w).Encode(st)
	})}
	go func() { _ = srv.Serve(l) }()
	defer srv.Close()

	code, out, stderr := runCLI("status", "--socket", sock)
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	if code != 0 || len(lines) != 3 {
		t.Fatalf("exit %d, %d lines, want a header and 2 rows:\n%s%s", code, len(lines), out, stderr)
	}
	if !strings.HasSuffix(lines[1], "snapshot round: hook /etc/zrepl/hooks/flush.sh: exit status 1 (…)") || !strings.HasPrefix(lines[2], "sink ") {
		t.Fatalf("table:\n%s", out)
	}
	// The columns line up: STATE starts at the same place in every row.
	col := strings.Index(lines[0], "STATE")
	if lines[1][col:col+5] != "error" || lines[2][col:col+7] != "serving" {
		t.Fatalf("columns:\n%s", out)
	}
	code, out, _ = runCLI("status", "--json", "--socket", sock)
	var got []daemon.Status
	if err := json.Unmarshal([]byte(out), &got); err != nil || code != 0 || got[0].LastError != lastErr {
		t.Fatalf("--json: exit %d %v: %q", code, err, out)
	}
	for in, want := range map[string]string{
		"":               "",
		"one line":       "one line",
		"\n\nlate\n":     "late",
		"a\r\nb":         "a (…)",
		"tab\there\n \n": "tab here",
	} {
		if got := oneLine(in); got != want {
			t.Errorf("oneLine(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestConfigcheckIgnored: configcheck warns on each key it accepts but does
// not act on, naming key and line; --strict fails on them (exit 1).
func TestConfigcheckIgnored(t *testing.T) {
	doc := strings.Replace(zreplDoc, "    pruning:\n      keep_sender:", "    replication:\n      protection:\n        initial: guarantee_resumability\n    pruning:\n      keep_sender:", 1)
	doc = strings.Replace(doc, "      client_cns:\n        - \"garage\"\n", "      client_cns:\n        - \"garage\"\n    recv:\n      placeholder:\n        encryption: inherit\n", 1)
	cfg := writeFile(t, "zrepl.yml", doc)
	code, out, stderr := runCLI("configcheck", "--config", cfg)
	want := []string{
		`warning: line 27: job "garage_push": replication.protection is accepted but ignored`,
		`warning: line 51: job "sink": recv.placeholder.encryption is accepted but ignored`,
	}
	if code != 0 || !strings.Contains(out, "configuration ok, 2 key(s) ignored") {
		t.Fatalf("exit %d\n%s%s", code, out, stderr)
	}
	for _, w := range want {
		if !strings.Contains(stderr, w) {
			t.Errorf("stderr lacks %q:\n%s", w, stderr)
		}
	}
	code, _, stderr = runCLI("configcheck", "--strict", "--config", cfg)
	if code != 1 || !strings.Contains(stderr, "2 key(s) accepted but ignored (--strict)") || !strings.Contains(stderr, want[0]) {
		t.Fatalf("--strict: exit %d: %s", code, stderr)
	}
	code, out, _ = runCLI("configcheck", "--json", "--config", cfg)
	var res configcheckJSON
	if err := json.Unmarshal([]byte(out), &res); err != nil || code != 0 || len(res.Jobs) != 3 || len(res.Ignored) != 2 || res.Ignored[1].Key != "recv.placeholder.encryption" || res.Ignored[1].Line != 51 {
		t.Fatalf("--json: exit %d %v %+v", code, err, res)
	}
	// Without ignored keys, --strict passes.
	clean := writeFile(t, "clean.yml", zreplDoc)
	if code, out, stderr := runCLI("configcheck", "--strict", "--config", clean); code != 0 || !strings.Contains(out, "configuration ok\n") || stderr != "" {
		t.Fatalf("clean --strict: exit %d\n%s%s", code, out, stderr)
	}
}
