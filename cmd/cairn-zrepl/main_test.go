package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/internal/cli"
	"github.com/cairn-backup/cairn/internal/testenv"
	"github.com/cairn-backup/cairn/zfsrepl"
	"github.com/cairn-backup/cairn/zfsrepl/transport/transporttest"
)

func TestMain(m *testing.M) { os.Exit(testenv.RunInZFSVM(m)) }

func runCLI(args ...string) (code int, stdout, stderr string) {
	return runEnv(context.Background(), nil, args...)
}

// runEnv runs a command line with ctx and the environment env.
func runEnv(ctx context.Context, env map[string]string, args ...string) (code int, stdout, stderr string) {
	var o, e bytes.Buffer
	code = run(ctx, args, cli.IO{In: strings.NewReader(""), Out: &o, Err: &e, Getenv: func(k string) string { return env[k] }})
	return code, o.String(), e.String()
}

// writeConfig writes certificates and a zrepl-format configuration with a
// push job "push" and a sink job "sink" (root_fs dst/zrepl) on addr.
func writeConfig(t *testing.T, addr, filesystems string) string {
	t.Helper()
	dir := t.TempDir()
	ca := transporttest.NewCA(t, "cli CA")
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	caf := write("ca.crt", ca.CAPEM())
	sc, sk := transporttest.PEM(t, ca.Issue(t, "backup", true))
	cc, ck := transporttest.PEM(t, ca.Issue(t, "garage", false))
	cfg := fmt.Sprintf(`jobs:
  - name: push
    type: push
    connect:
      type: tls
      address: %q
      ca: %s
      cert: %s
      key: %s
      server_cn: backup
    filesystems:
      %q: true
    snapshotting:
      type: manual
    pruning:
      keep_sender:
        - type: not_replicated
      keep_receiver:
        - type: last_n
          count: 10
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
`, addr, caf, write("c.crt", cc), write("c.key", ck), filesystems, addr, caf, write("s.crt", sc), write("s.key", sk))
	return write("zrepl.yml", []byte(cfg))
}

func TestUsage(t *testing.T) {
	cfg := writeConfig(t, "127.0.0.1:1", "tank/x<")
	for _, c := range []struct {
		args []string
		code int
	}{
		{[]string{"replicate"}, 2},
		{[]string{"replicate", "push"}, 2},
		{[]string{"replicate", "--bogus", "push"}, 2},
		{[]string{"replicate", "--config", cfg, "nojob"}, 2},
		{[]string{"replicate", "--config", cfg, "sink"}, 2},
		{[]string{"replicate", "--config", "/nonexistent.yml", "push"}, 2},
		{[]string{"serve", "--config", cfg, "push"}, 2},
		{[]string{"nonsense"}, 2},
		{[]string{"--log-level", "loud", "configcheck", "--config", cfg}, 2},
		{[]string{"--log-format", "xml", "configcheck", "--config", cfg}, 2},
		{[]string{"configcheck", "--config", cfg}, 0},
		{[]string{"--config", cfg, "configcheck", "--log-level", "debug", "--log-format", "json"}, 0},
		{[]string{"version"}, 0},
	} {
		if code, _, stderr := runCLI(c.args...); code != c.code {
			t.Errorf("%v: exit %d, want %d (%s)", c.args, code, c.code, stderr)
		}
	}
}

func freeAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func sh(t *testing.T, cmd string) string {
	t.Helper()
	out, err := exec.Command("sh", "-c", cmd).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", cmd, err, out)
	}
	return strings.TrimSpace(string(out))
}

// TestReplicateCLI runs `cairn-zrepl serve` and `cairn-zrepl replicate
// --json` on real ZFS: two rounds, then a diverged receiver exits 1.
func TestReplicateCLI(t *testing.T) {
	testenv.ZPool(t, "src")
	testenv.ZPool(t, "dst")
	sh(t, "zfs create dst/zrepl && zfs create src/app && zfs create src/app/db")
	sh(t, "dd if=/dev/urandom of=/src/app/db/f bs=1M count=2 2>/dev/null && zfs snapshot -r src/app@a")
	addr := freeAddr(t)
	cfg := writeConfig(t, addr, "src/app<")
	go runCLI("serve", "--config", cfg, "sink")
	for i := 0; i < 100; i++ { // wait for the listener
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	replicate := func() (int, zfsrepl.Report, string) {
		code, out, stderr := runCLI("replicate", "--config", cfg, "--json", "push")
		var rep zfsrepl.Report
		if err := json.Unmarshal([]byte(out), &rep); err != nil {
			t.Fatalf("bad JSON report: %v\n%s\n%s", err, out, stderr)
		}
		return code, rep, stderr
	}
	code, rep, stderr := replicate()
	if code != 0 || len(rep.Filesystems) != 2 || rep.Filesystems[1].State != zfsrepl.StateDone {
		t.Fatalf("exit %d: %+v\n%s", code, rep, stderr)
	}
	sh(t, "zfs snapshot -r src/app@b")
	code, rep, stderr = replicate()
	if code != 0 || rep.Filesystems[0].Steps[0].Kind != zfsrepl.StepIncremental {
		t.Fatalf("exit %d: %+v\n%s", code, rep, stderr)
	}
	if got := sh(t, "zfs list -H -t snapshot -o name -r dst/zrepl/garage/src/app/db"); got != "dst/zrepl/garage/src/app/db@a\ndst/zrepl/garage/src/app/db@b" {
		t.Fatalf("receiver: %q", got)
	}
	sh(t, "zfs snapshot dst/zrepl/garage/src/app/db@mine && zfs snapshot -r src/app@c")
	code, rep, _ = replicate()
	if code != 1 || rep.Filesystems[1].Conflict != zfsrepl.ConflictDiverged || rep.Filesystems[0].State != zfsrepl.StateDone {
		t.Fatalf("exit %d: %+v", code, rep)
	}
	// The text report names each filesystem and state.
	_, out, _ := runCLI("replicate", "--config", cfg, "push")
	if !strings.Contains(out, "src/app/db") || !strings.Contains(out, "conflict") {
		t.Fatalf("text report:\n%s", out)
	}
}
