package config

import (
	"strings"
	"testing"

	"github.com/cairn-backup/cairn/zfsrepl"
)

// seed is the seed cluster's zrepl configuration, as zrepl documents it.
const seed = `
global:
  logging:
    - type: stdout
      level: info
      format: human
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
    filesystems:
      "tank/garage<": true
      "tank/garage/tmp<": false
    send:
      encrypted: false
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
  - name: zrepl_sink
    type: sink
    root_fs: "wdc/zrepl"
    serve:
      type: tls
      listen: ":8888"
      ca: /etc/zrepl/ca.crt
      cert: /etc/zrepl/backup-node.crt
      key: /etc/zrepl/backup-node.key
      client_cns:
        - "garage"
`

func TestParseSeed(t *testing.T) {
	c, err := Parse([]byte(seed))
	if err != nil {
		t.Fatal(err)
	}
	push, err := c.Job("garage_push")
	if err != nil {
		t.Fatal(err)
	}
	if push.Connect.ServerCN != "backup-node" || push.PlanConfig() != (zfsrepl.PlanConfig{}) {
		t.Fatalf("%+v", push)
	}
	f, err := push.Filter()
	if err != nil || !f.Match("tank/garage/data") || f.Match("tank/garage/tmp/x") {
		t.Fatalf("filter: %v", err)
	}
	sink, err := c.Job("zrepl_sink")
	if err != nil || sink.RootFS != "wdc/zrepl" || sink.Serve.ClientCNs[0] != "garage" {
		t.Fatalf("%+v %v", sink, err)
	}
	if _, err := c.Job("nope"); err == nil {
		t.Fatal("missing job found")
	}
}

func TestParseErrors(t *testing.T) {
	cases := map[string]string{
		"unknown key":     strings.Replace(seed, "server_cn:", "server_cn_typo:", 1),
		"bad type":        strings.Replace(seed, "type: push", "type: pusher", 1),
		"root_fs escapes": strings.Replace(seed, `root_fs: "wdc/zrepl"`, `root_fs: "../x"`, 1),
		"bad client cn":   strings.Replace(seed, `- "garage"`, `- "../garage"`, 1),
		"bad filesystems": strings.Replace(seed, `"tank/garage<": true`, `"/tank<": true`, 1),
		"no tls files":    strings.Replace(seed, "ca: /etc/zrepl/ca.crt\n      cert: /etc/zrepl/garage.crt", "cert: /etc/zrepl/garage.crt", 1),
		"duplicate job":   strings.Replace(seed, "zrepl_sink", "garage_push", 1),
		"bad initial":     strings.Replace(seed, "    send:\n", "    conflict_resolution:\n      initial_replication: newest\n    send:\n", 1),
	}
	for name, text := range cases {
		if _, err := Parse([]byte(text)); err == nil {
			t.Errorf("%s: accepted", name)
		} else {
			t.Logf("%s: %v", name, err)
		}
	}
	_, err := Parse([]byte(cases["unknown key"]))
	if !strings.Contains(err.Error(), "server_cn_typo") || !strings.Contains(err.Error(), "line") {
		t.Errorf("error does not name the key and line: %v", err)
	}
}
