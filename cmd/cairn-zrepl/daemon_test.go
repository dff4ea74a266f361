package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// zreplDoc is a configuration written as zrepl documents it: a push job with
// tls connect, a sink with tls serve, a snap job.
const zreplDoc = `global:
  logging:
    - type: stdout
      level: warn
      format: human
  monitoring:
    - type: prometheus
      listen: ':9811'
jobs:
  - name: garage_push
    type: push
    connect:
      type: tls
      address: "backup-node:8888"
      ca: /etc/zrepl/ca.crt
      cert: /etc/zrepl/garage.crt
      key: /etc/zrepl/garage.key
      server_cn: "backup-node"
    filesystems: {
      "tank/garage<": true
    }
    snapshotting:
      type: periodic
      prefix: zrepl_
      interval: 10m
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
    root_fs: "wdc/zrepl"
    serve:
      type: tls
      listen: ":8888"
      ca: "/etc/zrepl/ca.crt"
      cert: "/etc/zrepl/backup-node.crt"
      key: "/etc/zrepl/backup-node.key"
      client_cns:
        - "garage"
  - name: home_snap
    type: snap
    filesystems: {
      "tank/home<": true
    }
    snapshotting:
      type: periodic
      prefix: zrepl_
      interval: 1h
    pruning:
      keep:
        - type: last_n
          count: 24
`

func TestConfigcheck(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "zrepl.yml")
	if err := os.WriteFile(good, []byte(zreplDoc), 0o600); err != nil {
		t.Fatal(err)
	}
	code, out, stderr := runCLI("configcheck", "--config", good)
	if code != 0 || !strings.Contains(out, "job home_snap: snap") || !strings.Contains(out, "configuration ok") {
		t.Fatalf("configcheck: exit %d\n%s\n%s", code, out, stderr)
	}
	bad := filepath.Join(dir, "bad.yml")
	if err := os.WriteFile(bad, []byte(strings.Replace(zreplDoc, "          count: 24", "          count: 24\n          keep_all: true", 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	code, _, stderr = runCLI("configcheck", "--config", bad)
	if code != 2 || !strings.Contains(stderr, `line 59: pruning.keep (last_n)`) || !strings.Contains(stderr, `unknown key "keep_all"`) {
		t.Fatalf("bad configuration: exit %d: %s", code, stderr)
	}
}

func TestControlCommandsWithoutDaemon(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "control")
	for _, c := range []struct {
		args []string
		code int
	}{
		{[]string{"status", "--socket", sock}, 1},
		{[]string{"status", "--json", "--socket", sock}, 1},
		{[]string{"signal", "wakeup", "garage_push", "--socket", sock}, 1},
		{[]string{"signal", "reset", "garage_push", "--socket", sock}, 1},
		{[]string{"signal", "abort", "garage_push", "--socket", sock}, 2},
		{[]string{"signal", "wakeup"}, 2},
		{[]string{"daemon"}, 2},
		{[]string{"daemon", "--config", "/nonexistent.yml"}, 2},
	} {
		if code, _, stderr := runCLI(c.args...); code != c.code {
			t.Errorf("%v: exit %d, want %d (%s)", c.args, code, c.code, stderr)
		}
	}
}
