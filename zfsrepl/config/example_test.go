package config_test

import (
	"fmt"

	"github.com/cairn-backup/cairn/zfsrepl/config"
)

// Parse reads zrepl's YAML once into typed fields; errors name the key and
// line.
func ExampleParse() {
	cfg, err := config.Parse([]byte(`
jobs:
  - name: garage_push
    type: push
    connect:
      type: tcp
      address: "backup-node:8888"
    filesystems:
      "tank/garage<": true
      "tank/garage/tmp<": false
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
`))
	if err != nil {
		fmt.Println(err)
		return
	}
	job, err := cfg.Job("garage_push")
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, fs := range []string{"tank/garage", "tank/garage/data", "tank/garage/tmp/x", "tank/other"} {
		fmt.Println(fs, job.Filter.Match(fs))
	}
	snap := job.Snapshotting
	fmt.Println(snap.Type, snap.Prefix, snap.Interval)

	_, err = config.Parse([]byte("jobs:\n  - name: x\n    type: push\n    connnect: {}\n"))
	fmt.Println(err)
	// Output:
	// tank/garage true
	// tank/garage/data true
	// tank/garage/tmp/x false
	// tank/other false
	// periodic zrepl_ 10m0s
	// config: line 4: unknown key "connnect"
}
