package config

import (
	"os"
	"strings"
	"testing"
)

// FuzzParse feeds the zrepl configuration parser arbitrary YAML: it must
// never panic, and a configuration it accepts once it accepts again.
func FuzzParse(f *testing.F) {
	if b, err := os.ReadFile("testdata/zrepl.yml"); err == nil {
		f.Add(b)
	}
	f.Add([]byte(seed))
	f.Add([]byte("jobs: []\n"))
	f.Add([]byte("jobs:\n  - name: a\n    type: snap\n    filesystems: {\"p<\": true}\n    snapshotting: {type: cron, prefix: z_, cron: \"*/5 * * * *\"}\n    pruning: {keep: [{type: last_n, count: 3}]}\n"))
	f.Add([]byte("jobs:\n  - name: s\n    type: sink\n    root_fs: r\n    serve: {type: tcp, listen: \":1\", clients: {\"10.0.0.1\": c}}\n"))
	f.Add([]byte("global: {logging: [{type: syslog}]}\njobs: [{name: x, type: push, connect: {type: tcp, address: \"h:1\", dial_timeout: -1s}}]\n"))
	f.Add([]byte("jobs: [{name: x, type: push, send: {bandwidth_limit: {max: 99999999999999999999KiB}}}]\n"))
	f.Add([]byte("&a [*a]"))
	f.Add([]byte("jobs: !!binary AAAA"))
	f.Fuzz(func(t *testing.T, b []byte) {
		if _, err := Parse(b); err == nil {
			if _, err := Parse(b); err != nil {
				t.Fatalf("accepted once, refused the second time: %v", err)
			}
		}
	})
}

// FuzzParseSize checks the size parser (send.bandwidth_limit): an accepted
// size is -1 (unlimited, only for "-1") or between 0 and 2^62; it never
// wraps around.
func FuzzParseSize(f *testing.F) {
	for _, s := range []string{"-1", "0", "23.5 MiB", "1 KiB", "10MB", "1.5GiB", "99999999999999999999KiB",
		"1e400", ".", "1..2 B", "  7  ", "-0", "NaN", "Inf MiB", "18446744073709551616"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := ParseSize(s)
		if err != nil {
			if !strings.Contains(err.Error(), "not a size") {
				t.Fatalf("%q: error does not name the problem: %v", s, err)
			}
			return
		}
		if n == -1 && strings.TrimSpace(s) != "-1" || n < -1 || n > 1<<62 {
			t.Fatalf("ParseSize(%q) = %d", s, n)
		}
	})
}

// TestParseSizeOverflow is issue 19, case 5: a size that overflows int64
// is an error, not MinInt64 (which configcheck took for "unlimited").
func TestParseSizeOverflow(t *testing.T) {
	for _, s := range []string{"99999999999999999999KiB", "9223372036854775808", "10000000 TiB"} {
		if n, err := ParseSize(s); err == nil {
			t.Errorf("ParseSize(%q) = %d, want an error", s, n)
		}
	}
}

// FuzzDurations puts arbitrary text where the configuration takes durations
// (snapshotting interval, connect.dial_timeout): never a panic.
func FuzzDurations(f *testing.F) {
	for _, s := range []string{"10m", "0s", "-1s", "1h30m", "9999999999999h", "1.5.5s", "", "1e3s"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, d string) {
		q := strings.ReplaceAll(strings.ReplaceAll(d, `\`, `\\`), `"`, `\"`)
		cfg := "jobs:\n  - name: p\n    type: push\n    connect: {type: tcp, address: \"h:1\", dial_timeout: \"" + q + "\"}\n" +
			"    filesystems: {\"p<\": true}\n    snapshotting: {type: periodic, prefix: z_, interval: \"" + q + "\"}\n" +
			"    pruning: {keep_sender: [{type: last_n, count: 1}], keep_receiver: [{type: last_n, count: 1}]}\n"
		_, _ = Parse([]byte(cfg))
	})
}
