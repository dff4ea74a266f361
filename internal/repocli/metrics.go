package repocli

import (
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/cairn-backup/cairn/blockdiff"
	"github.com/cairn-backup/cairn/internal/cli"
)

// CronJobs are not scraped, so with --metrics-file a run leaves its figures
// for node_exporter's textfile collector: when it ended, whether it
// succeeded, how long it took, when the command last succeeded (a failed run
// carries that over from the file it replaces), and what the command did.
// Every series has the label run, the file's name without .prom, so that the
// files of several CronJobs never hold the same series.

// Names of the run metrics every --metrics-file holds.
const (
	MetricLastRun     = "cairn_last_run_timestamp_seconds"
	MetricSuccess     = "cairn_last_run_success"
	MetricDuration    = "cairn_last_run_duration_seconds"
	MetricLastSuccess = "cairn_last_success_timestamp_seconds"
)

// metrics collects the gauges of one run.
type metrics struct {
	mu   sync.Mutex
	reg  *prometheus.Registry
	vecs map[string]*prometheus.GaugeVec
}

// Metric sets a gauge of the --metrics-file; labels are name, value pairs.
// Without --metrics-file it does nothing.
func (r *Repo) Metric(name, help string, value float64, labels ...string) {
	if r.MetricsFile == "" || len(labels)%2 != 0 {
		return
	}
	lm := prometheus.Labels{}
	keys := make([]string, 0, len(labels)/2)
	for i := 0; i < len(labels); i += 2 {
		lm[labels[i]] = labels[i+1]
		keys = append(keys, labels[i])
	}
	r.metrics.mu.Lock()
	defer r.metrics.mu.Unlock()
	if r.metrics.reg == nil {
		r.metrics.reg, r.metrics.vecs = prometheus.NewPedanticRegistry(), map[string]*prometheus.GaugeVec{}
	}
	vec := r.metrics.vecs[name]
	if vec == nil {
		run := strings.TrimSuffix(filepath.Base(r.MetricsFile), ".prom")
		vec = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: name, Help: help,
			ConstLabels: prometheus.Labels{"run": run}}, keys)
		if err := r.metrics.reg.Register(vec); err != nil {
			r.warn("metric not recorded", "metric", name, "err", err)
			return
		}
		r.metrics.vecs[name] = vec
	}
	g, err := vec.GetMetricWith(lm)
	if err != nil {
		r.warn("metric not recorded", "metric", name, "err", err)
		return
	}
	g.Set(value)
}

// warn logs a warning once the logger is set up.
func (r *Repo) warn(msg string, args ...any) {
	if r.Log != nil {
		r.Log.Warn(msg, args...)
	}
}

// RecordVersion adds a backup's figures to the --metrics-file, by volume.
func (r *Repo) RecordVersion(v *blockdiff.Version) {
	vol := []string{"volume", v.Volume}
	valid := 0.0
	if v.Status == blockdiff.StatusValid {
		valid = 1
	}
	r.Metric("cairn_backup_valid", backupValidHelp, valid, vol...)
	r.Metric("cairn_backup_size_bytes", "Size of the volume or stream backed up.", float64(v.Size), vol...)
	r.Metric("cairn_backup_read_bytes", "Bytes read from the source.", float64(v.Stats.BytesRead), vol...)
	r.Metric("cairn_backup_stored_bytes", "Bytes of new data objects stored, after deduplication and compression.", float64(v.Stats.BytesWritten), vol...)
	r.Metric("cairn_backup_duration_seconds", "How long the volume's backup took.", v.Stats.DurationSeconds, vol...)
}

const backupValidHelp = "1 if the volume's new version is valid, 0 if its backup failed."

// RecordFailedBackup records in the --metrics-file that volume's backup
// made no version (backup-all goes on with the other volumes).
func (r *Repo) RecordFailedBackup(volume string) {
	r.Metric("cairn_backup_valid", backupValidHelp, 0, "volume", volume)
}

// RecordEnforce adds an enforce's figures to the --metrics-file, by volume
// (with --dry-run, what would be removed).
func (r *Repo) RecordEnforce(res *blockdiff.EnforceResult) {
	for _, v := range res.Volumes {
		r.Metric("cairn_enforce_kept_versions", "Versions the retention rules keep.", float64(len(v.Kept)), "volume", v.Volume)
		r.Metric("cairn_enforce_removed_versions", "Versions removed (with --dry-run: to remove).", float64(len(v.Removed)), "volume", v.Volume)
	}
}

// RecordCleanup adds a cleanup's figures to the --metrics-file.
func (r *Repo) RecordCleanup(res *blockdiff.CleanupResult) {
	r.Metric("cairn_cleanup_deleted_objects", "Unreferenced data objects deleted (with --dry-run: to delete).", float64(res.Deleted))
	r.Metric("cairn_cleanup_deleted_bytes", "Their stored size.", float64(res.DeletedBytes))
	r.Metric("cairn_cleanup_missing_objects", "Referenced data objects not found (run a scrub).", float64(res.Missing))
	r.Metric("cairn_repository_stored_bytes", "Stored size of the data objects listed.", float64(res.StoredBytes))
}

// RecordScrub adds a scrub's figures to the --metrics-file.
func (r *Repo) RecordScrub(rep *blockdiff.ScrubReport) {
	r.Metric("cairn_scrub_checked_versions", "Versions checked.", float64(rep.VersionsChecked))
	r.Metric("cairn_scrub_checked_bytes", "Stored bytes of the objects checked.", float64(rep.BytesChecked))
	r.Metric("cairn_scrub_failures", "Damaged blocks found.", float64(len(rep.Failures)))
	r.Metric("cairn_scrub_invalid_versions", "Checked versions that are not valid.", float64(len(rep.Invalid)))
}

// writeMetrics writes the run metrics and the command's gauges to
// --metrics-file, replacing it atomically.
func (r *Repo) writeMetrics(binary, command string, start time.Time, ok bool) error {
	end := time.Now()
	run := []string{"binary", binary, "command", command}
	success := 0.0
	if ok {
		success = 1
	}
	r.Metric(MetricLastRun, "When the run ended (Unix time).", unixSeconds(end), run...)
	r.Metric(MetricSuccess, "1 if the run succeeded, 0 if it failed.", success, run...)
	r.Metric(MetricDuration, "How long the run took.", end.Sub(start).Seconds(), run...)
	last, had := previousSuccess(r.MetricsFile)
	if ok {
		last, had = unixSeconds(end), true
	}
	if had {
		r.Metric(MetricLastSuccess, "When a run of this command last succeeded (Unix time).", last, run...)
	}
	r.metrics.mu.Lock()
	defer r.metrics.mu.Unlock()
	return prometheus.WriteToTextfile(r.MetricsFile, r.metrics.reg)
}

// previousSuccess reads the last success time from the file a run replaces.
func previousSuccess(path string) (float64, bool) {
	f, err := os.Open(path)
	if err != nil {
		return 0, false
	}
	defer f.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(f)
	if err != nil {
		return 0, false
	}
	fam := fams[MetricLastSuccess]
	if fam == nil || len(fam.GetMetric()) == 0 {
		return 0, false
	}
	return fam.GetMetric()[0].GetGauge().GetValue(), true
}

func unixSeconds(t time.Time) float64 { return float64(t.UnixNano()) / 1e9 }

// checkMetricsFile refuses a --metrics-file the textfile collector would
// not read.
func checkMetricsFile(path string) error {
	if path == "" {
		return nil
	}
	if !strings.HasSuffix(path, ".prom") {
		return cli.Usagef("--metrics-file %q: node_exporter's textfile collector reads only *.prom files", path)
	}
	if st, err := os.Stat(filepath.Dir(path)); err != nil || !st.IsDir() {
		return cli.Usagef("--metrics-file %q: its folder does not exist", path)
	}
	return nil
}
