package repocli

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/spf13/cobra"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cairn-backup/cairn/internal/cli"
)

// readProm parses a textfile and returns each metric's single sample.
func readProm(t *testing.T, path string) map[string]*dto.Metric {
	t.Helper()
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(f)
	require.NoError(t, err, "node_exporter must be able to parse the file")
	out := map[string]*dto.Metric{}
	for name, fam := range fams {
		require.Len(t, fam.GetMetric(), 1, name)
		out[name] = fam.GetMetric()[0]
	}
	return out
}

func labels(m *dto.Metric) map[string]string {
	l := map[string]string{}
	for _, p := range m.GetLabel() {
		l[p.GetName()] = p.GetValue()
	}
	return l
}

// TestMetricsFile: a successful run writes its figures and the success time;
// a failed run replaces the file but carries the last success over; a usage
// error writes nothing.
func TestMetricsFile(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "nightly-backup.prom")
	exec := func(fail bool, args ...string) int {
		sio, _ := testIO(nil)
		r := &Repo{}
		r.IO = sio
		root := &cobra.Command{Use: "cairn-x", PersistentPreRunE: func(*cobra.Command, []string) error { return r.Setup() }}
		r.AddFlags(root)
		root.AddCommand(&cobra.Command{Use: "work", RunE: func(*cobra.Command, []string) error {
			r.Metric("cairn_backup_stored_bytes", "stored", 1234, "volume", "pvc-1")
			if fail {
				return errors.New("server unreachable")
			}
			return nil
		}})
		return r.Execute(context.Background(), root, args)
	}

	require.Equal(t, cli.ExitOK, exec(false, "work", "--metrics-file", file))
	m := readProm(t, file)
	assert.Equal(t, 1.0, m[MetricSuccess].GetGauge().GetValue())
	assert.Equal(t, map[string]string{"run": "nightly-backup", "binary": "cairn-x", "command": "work"}, labels(m[MetricSuccess]))
	assert.Equal(t, map[string]string{"run": "nightly-backup", "volume": "pvc-1"}, labels(m["cairn_backup_stored_bytes"]))
	assert.Equal(t, 1234.0, m["cairn_backup_stored_bytes"].GetGauge().GetValue())
	success := m[MetricLastSuccess].GetGauge().GetValue()
	assert.Equal(t, m[MetricLastRun].GetGauge().GetValue(), success)

	require.Equal(t, cli.ExitFailure, exec(true, "work", "--metrics-file", file))
	m = readProm(t, file)
	assert.Equal(t, 0.0, m[MetricSuccess].GetGauge().GetValue())
	assert.Equal(t, success, m[MetricLastSuccess].GetGauge().GetValue(), "a failed run keeps the last success")
	assert.Greater(t, m[MetricLastRun].GetGauge().GetValue(), success)

	before, err := os.ReadFile(file)
	require.NoError(t, err)
	require.Equal(t, cli.ExitUsage, exec(false, "work", "--metrics-file", filepath.Join(dir, "x.txt")))
	require.Equal(t, cli.ExitUsage, exec(false, "work", "--metrics-file", filepath.Join(dir, "missing", "x.prom")))
	require.Equal(t, cli.ExitUsage, exec(false, "work", "--metrics-file", file, "--bogus"))
	after, err := os.ReadFile(file)
	require.NoError(t, err)
	assert.Equal(t, string(before), string(after), "usage errors leave the file alone")
	_, err = os.Stat(filepath.Join(dir, "x.txt"))
	assert.True(t, os.IsNotExist(err))

	// A failed first run has no success to report.
	first := filepath.Join(dir, "first.prom")
	require.Equal(t, cli.ExitFailure, exec(true, "work", "--metrics-file", first))
	assert.NotContains(t, readProm(t, first), MetricLastSuccess)
}
