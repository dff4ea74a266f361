package config

import (
	"bytes"
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

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
	if push.Connect.ServerCN != "backup-node" || push.Plan != (zfsrepl.PlanConfig{}) {
		t.Fatalf("%+v", push)
	}
	if f := push.Filter; !f.Match("tank/garage/data") || f.Match("tank/garage/tmp/x") {
		t.Fatal("filter")
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
	if !regexp.MustCompile(`line \d+: unknown key "server_cn_typo"`).MatchString(err.Error()) {
		t.Errorf("error does not name the key and line: %v", err)
	}
}

// TestLoadZreplDocumented loads a configuration written as zrepl documents
// it, unchanged, and checks what the daemon reads from it.
func TestLoadZreplDocumented(t *testing.T) {
	c, err := Load("testdata/zrepl.yml")
	if err != nil {
		t.Fatal(err)
	}
	g := c.Global
	if len(g.Monitoring) != 1 || g.Monitoring[0].Listen != ":9811" || g.Logging[0].Level != "warn" || g.ControlSocket != "/var/run/zrepl/control" {
		t.Fatalf("global: %+v", g)
	}
	push, _ := c.Job("garage_push")
	s := push.Snapshotting
	if s.Type != "periodic" || s.Prefix != "zrepl_" || s.Interval != 10*time.Minute || s.TimestampFormat != "20060102_150405_000" || len(s.Hooks) != 1 || !s.Hooks[0].Filesystems.Match("tank/garage/data") {
		t.Fatalf("snapshotting: %+v", s)
	}
	p := push.Pruning
	if !p.KeepSender.NotReplicated || len(p.KeepSender.Policies) != 1 || len(p.KeepReceiver.Policies) != 2 || p.KeepReceiver.NotReplicated {
		t.Fatalf("pruning: %+v", p)
	}
	snap, _ := c.Job("local_snap")
	s = snap.Snapshotting
	if s.TimestampFormat != "2006-01-02_15:04:05" || s.Interval != time.Hour {
		t.Fatalf("snap snapshotting: %+v", s)
	}
	if p := snap.Pruning; len(p.Keep.Policies) != 2 {
		t.Fatalf("snap pruning: %+v", p)
	}
}

func TestParsePruningErrors(t *testing.T) {
	b, err := os.ReadFile("testdata/zrepl.yml")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	cases := map[string]struct{ from, to, want string }{
		"unknown rule key":        {"          count: 10\n", "          count: 10\n          counts: 3\n", `line 53: pruning.keep_sender (last_n): unknown key "counts"`},
		"unknown rule type":       {"- type: last_n", "- type: first_n", `unknown keep rule type "first_n"`},
		"not_replicated on recv":  {"      keep_receiver:\n", "      keep_receiver:\n        - type: not_replicated\n", "not_replicated only makes sense on the sender"},
		"bad grid":                {"24x1h | 30x1d", "24x1h | 30y1d", "line 55: pruning.keep_receiver: retention:"},
		"bad count":               {"count: 10", "count: ten", `count "ten" is not a number`},
		"unknown snapshotting":    {"interval: 10m", "interval: 10m\n      intervall: 5m", `unknown key "intervall"`},
		"bad interval":            {"interval: 10m", "interval: soon", `"soon" is not a positive duration`},
		"cron without a spec":     {"type: periodic\n      prefix: zrepl_\n", "type: cron\n      prefix: zrepl_\n", `unknown key "interval"`},
		"bad cron":                {"type: periodic\n      prefix: zrepl_\n      interval: 10m\n", "type: cron\n      prefix: zrepl_\n      cron: \"*/10 * * *\"\n", `snapshotting.cron: "*/10 * * *": expected exactly 5 fields`},
		"relative hook":           {"/etc/zrepl/hooks/garage-flush.sh", "garage-flush.sh", "path must be absolute"},
		"unknown global key":      {"  control:", "  controll:", `line 13: global: unknown key "controll"`},
		"unknown monitoring type": {"type: prometheus", "type: statsd", "only type prometheus"},
		"no pruning":              {"    pruning:\n      keep:\n", "    prunin:\n      keep:\n", "prunin"},
	}
	for name, c := range cases {
		text := strings.Replace(doc, c.from, c.to, 1)
		if text == doc {
			t.Fatalf("%s: %q not in the document", name, c.from)
		}
		_, err := Parse([]byte(text))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want it to contain %q", name, err, c.want)
		}
	}
}

// TestDeployConfigs loads the zrepl.yml of deploy/zrepl's ConfigMaps and
// checks the seed's schedule and pruning.
func TestDeployConfigs(t *testing.T) {
	for _, f := range []string{"push.yaml", "sink.yaml"} {
		b, err := os.ReadFile("../../deploy/zrepl/" + f)
		if err != nil {
			t.Fatal(err)
		}
		dec := yaml.NewDecoder(bytes.NewReader(b))
		var cm struct {
			Kind string
			Data map[string]string
		}
		if err := dec.Decode(&cm); err != nil || cm.Kind != "ConfigMap" {
			t.Fatalf("%s: first document: %v %q", f, err, cm.Kind)
		}
		c, err := Parse([]byte(cm.Data["zrepl.yml"]))
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		j := c.Jobs[0]
		if f == "sink.yaml" {
			if j.Type != "sink" || j.RootFS != "wdc/zrepl" || j.Serve.ClientCNs[0] != "garage" {
				t.Fatalf("%s: %+v", f, j)
			}
			continue
		}
		s := j.Snapshotting
		if s.Interval != 10*time.Minute || s.Prefix != "zrepl_" {
			t.Fatalf("%s: snapshotting %+v", f, s)
		}
		p := j.Pruning
		if len(p.KeepSender.Policies) != 1 || fmt.Sprint(p.KeepSender.Policies[0]) != `last_n 10 ""` ||
			len(p.KeepReceiver.Policies) != 1 || fmt.Sprint(p.KeepReceiver.Policies[0]) != "grid 1x1h(keep=all) | 24x1h | 30x1d | 6x30d" {
			t.Fatalf("%s: pruning %v", f, p)
		}
	}
}

// TestBandwidthLimit reads zrepl's send.bandwidth_limit.
func TestBandwidthLimit(t *testing.T) {
	b, err := os.ReadFile("testdata/zrepl.yml")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	for _, c := range []struct {
		section     string
		rate, burst int64
		err         string
	}{
		{"", 0, 128 << 10, ""},
		{"        max: 23.5 MiB\n", 24641536, 128 << 10, ""},
		{"        max: -1\n", 0, 128 << 10, ""},
		{"        max: 2000000\n        bucket_capacity: 64KiB\n", 2000000, 64 << 10, ""},
		{"        max: 3 MB\n", 3000000, 128 << 10, ""},
		{"        max: fast\n", 0, 0, `line 17: job "garage_push": send.bandwidth_limit.max: "fast" is not a size`},
		{"        max: 1 MiB\n        bucket_capacity: 0\n", 0, 0, "bucket_capacity"},
		{"        maxx: 1 MiB\n", 0, 0, `line 33: unknown key "maxx"`},
	} {
		text := doc
		if c.section != "" {
			text = strings.Replace(doc, "    send:\n      encrypted: false\n", "    send:\n      encrypted: false\n      bandwidth_limit:\n"+c.section, 1)
			if text == doc {
				t.Fatal("no send section in the document")
			}
		}
		cfg, err := Parse([]byte(text))
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("%q: error %v, want %q", c.section, err, c.err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%q: %v", c.section, err)
		}
		j, _ := cfg.Job("garage_push")
		if l := j.Send.BandwidthLimit; l.Rate != c.rate || l.Burst != c.burst {
			t.Errorf("%q: rate %d burst %d, want %d %d", c.section, l.Rate, l.Burst, c.rate, c.burst)
		}
	}
}

// TestCronSnapshotting reads zrepl's `type: cron` snapshotting.
func TestCronSnapshotting(t *testing.T) {
	b, err := os.ReadFile("testdata/zrepl.yml")
	if err != nil {
		t.Fatal(err)
	}
	text := strings.Replace(string(b), "type: periodic\n      prefix: zrepl_\n      interval: 10m\n", "type: cron\n      prefix: zrepl_\n      cron: \"5,35 */2 * * *\"\n", 1)
	cfg, err := Parse([]byte(text))
	if err != nil {
		t.Fatal(err)
	}
	j, _ := cfg.Job("garage_push")
	s := j.Snapshotting
	if s.Type != "cron" || s.Cron != "5,35 */2 * * *" || s.Prefix != "zrepl_" || s.Interval != 0 {
		t.Fatalf("%+v", s)
	}
	sched := s.SnapshotConfig().Schedule
	at := time.Date(2026, 1, 1, 2, 5, 0, 0, time.UTC)
	for _, want := range []string{"02:35", "04:05", "04:35", "06:05"} {
		at = sched(at)
		if got := at.Format("15:04"); got != want {
			t.Fatalf("next snapshot at %s, want %s", got, want)
		}
	}
}

// TestIgnored lists the keys cairn accepts but does not act on, with their
// lines, and refuses bad values in them.
func TestIgnored(t *testing.T) {
	c, err := Load("testdata/zrepl.yml")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, i := range c.Ignored {
		got = append(got, i.String())
	}
	want := []string{
		`line 33: job "garage_push": replication.protection is accepted but ignored: cairn always holds a step's snapshots and keeps a cursor bookmark (guarantee_resumability)`,
		`line 74: job "sink": recv.placeholder.encryption is accepted but ignored: placeholders are created as ZFS does by default: they inherit their parent's encryption`,
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("ignored:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if r := c.Jobs[0].Replication; r.Protection.Initial != "guarantee_resumability" || r.Protection.Incremental != "guarantee_incremental_replication" {
		t.Fatalf("replication: %+v", r)
	}
	if r := c.Jobs[1].Recv; r.PlaceholderEncryption != "inherit" {
		t.Fatalf("recv: %+v", r)
	}

	// Every other accepted-but-ignored key.
	more := `global:
  logging:
    - type: stdout
      time: true
    - type: stdout
      color: false
  monitoring:
    - type: prometheus
      listen: ":9811"
      listen_freebind: true
  serve:
    stdinserver:
      sockdir: /var/run/zrepl/stdinserver
jobs:
  - name: p
    type: push
    connect:
      type: tcp
      address: "h:1"
      server_cn: x
      dial_timeout: 5s
    filesystems: {"tank<": true}
    root_fs: tank/nowhere
    replication:
      concurrency:
        steps: 2
    snapshotting: {type: manual}
    pruning:
      keep_sender: [{type: not_replicated}]
      keep_receiver: [{type: last_n, count: 1}]
  - name: s
    type: sink
    root_fs: wdc
    filesystems: {"tank<": true}
    serve:
      type: tcp
      listen: ":1"
      listen_freebind: true
      clients: {"10.0.0.1": a}
      client_cns: [a]
    recv:
      properties:
        inherit: [mountpoint]
      bandwidth_limit:
        max: 1 MiB
`
	c, err = Parse([]byte(more))
	if err != nil {
		t.Fatal(err)
	}
	got = nil
	for _, i := range c.Ignored {
		got = append(got, fmt.Sprintf("%d %s %s", i.Line, i.Job, i.Key))
	}
	want = []string{"4  global.logging.time", "5  global.logging", "6  global.logging.color", "10  global.monitoring.listen_freebind",
		"11  global.serve", "20 p connect.server_cn", "23 p root_fs", "25 p replication.concurrency", "34 s filesystems",
		"38 s serve.listen_freebind", "40 s serve.client_cns", "42 s recv.properties", "44 s recv.bandwidth_limit"}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("ignored:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if d := c.Jobs[0].Connect.DialTimeout; d != 5*time.Second {
		t.Fatalf("dial_timeout %v", d)
	}

	for name, cs := range map[string]struct{ from, to, want string }{
		"bad protection":  {"initial: guarantee_resumability", "initial: guarantee_all", `line 34: replication.protection.initial: "guarantee_all" is not`},
		"unknown recv":    {"encryption: inherit", "encryptio: inherit", `line 74: recv.placeholder: unknown key "encryptio"`},
		"bad placeholder": {"encryption: inherit", "encryption: aes", `"aes" is not unspecified, inherit or off`},
		"unknown repl":    {"      protection:\n", "      protect:\n", `replication: unknown key "protect"`},
	} {
		b, _ := os.ReadFile("testdata/zrepl.yml")
		text := strings.Replace(string(b), cs.from, cs.to, 1)
		if _, err := Parse([]byte(text)); err == nil || !strings.Contains(err.Error(), cs.want) {
			t.Errorf("%s: error %v, want %q", name, err, cs.want)
		}
	}
}
