package daemon

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	bytes       *prometheus.CounterVec
	duration    *prometheus.HistogramVec
	lastSuccess *prometheus.GaugeVec
	errors      *prometheus.CounterVec
	pruned      *prometheus.CounterVec
	snapshots   *prometheus.CounterVec
	started     prometheus.Gauge
}

func newMetrics(reg *prometheus.Registry) *metrics {
	m := &metrics{
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cairn_zrepl_replication_bytes_total", Help: "Bytes of zfs send streams replicated, per job.",
		}, []string{"job"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "cairn_zrepl_run_duration_seconds", Help: "Duration of replication and pruning runs.",
			Buckets: prometheus.ExponentialBuckets(0.1, 4, 10),
		}, []string{"job", "phase"}),
		lastSuccess: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "cairn_zrepl_last_success_timestamp_seconds", Help: "Unix time of the job's last run without errors; 0 until the first since the daemon started.",
		}, []string{"job"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cairn_zrepl_errors_total", Help: "Failed snapshot, replication and pruning runs.",
		}, []string{"job", "phase"}),
		pruned: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cairn_zrepl_pruned_snapshots_total", Help: "Snapshots destroyed by pruning, per side.",
		}, []string{"job", "side"}),
		snapshots: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cairn_zrepl_snapshots_taken_total", Help: "Snapshots taken by the snapshotter.",
		}, []string{"job"}),
		started: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "cairn_zrepl_daemon_start_timestamp_seconds", Help: "Unix time the daemon started running its jobs.",
		}),
	}
	reg.MustRegister(m.bytes, m.duration, m.lastSuccess, m.errors, m.pruned, m.snapshots, m.started)
	return m
}
