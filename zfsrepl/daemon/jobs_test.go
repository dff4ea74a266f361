package daemon

import (
	"context"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/zfsrepl"
	"github.com/cairn-backup/cairn/zfsrepl/config"
	"github.com/cairn-backup/cairn/zfsrepl/internal/memzfs"
)

// sleepRecorder is an Env.Sleep that adds up the waits instead of waiting.
type sleepRecorder struct {
	mu    sync.Mutex
	total time.Duration
}

func (s *sleepRecorder) sleep(_ context.Context, d time.Duration) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.total += d
	return nil
}

// TestBuildPushBandwidthLimit: the push job the builder returns (the one
// the daemon and `cairn-zrepl replicate` run) paces its send streams by
// send.bandwidth_limit.
func TestBuildPushBandwidthLimit(t *testing.T) {
	text := strings.Replace(fmt.Sprintf(testConfig, "/nonexistent/control", "127.0.0.1:1"),
		"    snapshotting:\n      type: manual\n",
		"    send:\n      bandwidth_limit:\n        max: 256 KiB\n        bucket_capacity: 64 KiB\n    snapshotting:\n      type: manual\n", 1)
	cfg, err := config.Parse([]byte(text))
	if err != nil {
		t.Fatal(err)
	}
	j, _ := cfg.Job("garage_push")
	if l := j.Send.BandwidthLimit; l.Rate != 256<<10 || l.Burst != 64<<10 {
		t.Fatalf("limit %+v", l)
	}
	for _, limited := range []bool{true, false} {
		src, dst := memzfs.New(1000), memzfs.New(5000)
		src.PayloadSize = 1 << 20
		src.CreateFS("tank/garage/data")
		src.Snapshot("tank/garage/data", "a")
		dst.CreateFS("wdc/zrepl/garage")
		rec := &sleepRecorder{}
		env := Env{
			Local: func(j *config.Job) (Local, error) {
				return &memzfs.Sender{Pool: src, Job: j.Name, Filter: j.Filter}, nil
			},
			Remote: func(j *config.Job) (zfsrepl.Receiver, io.Closer, error) {
				return &memzfs.Receiver{Pool: dst, Root: "wdc/zrepl/garage", Job: j.Name}, nil, nil
			},
			Sleep: rec.sleep,
		}
		if !limited {
			j.Send.BandwidthLimit.Rate = 0
		}
		p, err := env.BuildPush(j, nil)
		if err != nil {
			t.Fatal(err)
		}
		rep := p.Replicate(context.Background(), nil, nil)
		p.Close()
		if err := rep.Err(); err != nil || rep.Bytes() < 1<<20 {
			t.Fatalf("replication: %d bytes, %v", rep.Bytes(), err)
		}
		// 1 MiB at 256 KiB/s with a 64 KiB bucket: about 3.75 s of waits.
		if limited && (rec.total < 3500*time.Millisecond || rec.total > 4*time.Second) || !limited && rec.total != 0 {
			t.Errorf("limited %v: waited %v for %d bytes", limited, rec.total, rep.Bytes())
		}
	}
	if _, err := (Env{}).BuildSink(j, nil); err == nil || !strings.Contains(err.Error(), "is a push job, not sink") {
		t.Fatalf("BuildSink of a push job: %v", err)
	}
}

// TestMetricsFromStart: every job's series exist before its first run, the
// last success at 0, so that `time() - cairn_zrepl_last_success_timestamp_seconds`
// alerts on a daemon that never succeeded; the start time is exported.
func TestMetricsFromStart(t *testing.T) {
	w := start(t, true)
	want := map[string]bool{}
	for _, s := range []string{
		`cairn_zrepl_last_success_timestamp_seconds{job="garage_push"} 0`,
		`cairn_zrepl_replication_bytes_total{job="garage_push"} 0`,
		`cairn_zrepl_errors_total{job="garage_push",phase="replication"} 0`,
		`cairn_zrepl_run_duration_seconds{job="garage_push",phase="replication"} 0`,
		`cairn_zrepl_pruned_snapshots_total{job="garage_push",side="receiver"} 0`,
		`cairn_zrepl_run_duration_seconds{job="home_snap",phase="pruning"} 0`,
		`cairn_zrepl_errors_total{job="home_snap",phase="pruning"} 0`,
		fmt.Sprintf(`cairn_zrepl_daemon_start_timestamp_seconds{} %d`, time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).Unix()),
	} {
		want[s] = true
	}
	mfs, err := w.d.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, mf := range mfs {
		for _, m := range mf.Metric {
			var labels []string
			for _, l := range m.Label {
				labels = append(labels, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
			}
			var v float64
			switch {
			case m.Counter != nil:
				v = m.Counter.GetValue()
			case m.Gauge != nil:
				v = m.Gauge.GetValue()
			case m.Histogram != nil:
				v = float64(m.Histogram.GetSampleCount())
			}
			s := fmt.Sprintf("%s{%s} %.0f", mf.GetName(), strings.Join(labels, ","), v)
			if strings.Contains(s, `"home_snap"`) && (strings.Contains(s, "last_success") || strings.Contains(s, "snapshots_taken")) {
				continue // its 1 s snapshotter may already have run
			}
			got = append(got, s)
			delete(want, s)
		}
	}
	if len(want) != 0 {
		t.Fatalf("missing %v in\n%s", want, strings.Join(got, "\n"))
	}
}
