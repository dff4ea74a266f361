package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
)

// promValue returns the value of the sample of metric in a textfile whose
// labels include want (a `key="value"` fragment), or fails.
func promValue(t *testing.T, text, metric, want string) float64 {
	t.Helper()
	re := regexp.MustCompile(`(?m)^` + metric + `\{([^}]*)\} (\S+)$`)
	for _, m := range re.FindAllStringSubmatch(text, -1) {
		if regexp.MustCompile(regexp.QuoteMeta(want)).MatchString(m[1]) {
			v, err := strconv.ParseFloat(m[2], 64)
			if err != nil {
				t.Fatal(err)
			}
			return v
		}
	}
	t.Fatalf("no %s{%s} in\n%s", metric, want, text)
	return 0
}

// TestCLIMetricsFile: a backup and a cleanup each leave node_exporter a
// textfile with the run's outcome and what it did, equal to --json's figures.
func TestCLIMetricsFile(t *testing.T) {
	c := newCLI(t)
	c.ok("init", "--block-size", "64K")
	src, _ := image(t, 1<<20, 7)
	dir := t.TempDir()
	backupProm, cleanupProm := filepath.Join(dir, "backup-vol.prom"), filepath.Join(dir, "cleanup.prom")

	var res struct {
		Stats struct {
			BytesWritten float64 `json:"bytes_written"`
		} `json:"stats"`
		Size float64 `json:"size"`
	}
	out := c.ok("backup", "--json", "--metrics-file", backupProm, "file://"+src, "vol")
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(backupProm)
	if err != nil {
		t.Fatal(err)
	}
	text := string(b)
	if v := promValue(t, text, "cairn_last_run_success", `command="backup"`); v != 1 {
		t.Errorf("success = %v", v)
	}
	if v := promValue(t, text, "cairn_backup_stored_bytes", `volume="vol"`); v != res.Stats.BytesWritten || v == 0 {
		t.Errorf("stored bytes %v, --json says %v", v, res.Stats.BytesWritten)
	}
	if v := promValue(t, text, "cairn_backup_size_bytes", `run="backup-vol"`); v != res.Size {
		t.Errorf("size %v, --json says %v", v, res.Size)
	}

	c.ok("rm", "--force", c.versions()[0].ID)
	var cres struct {
		Deleted float64 `json:"deleted"`
	}
	if err := json.Unmarshal([]byte(c.ok("cleanup", "--grace", "0s", "--json", "--metrics-file", cleanupProm)), &cres); err != nil {
		t.Fatal(err)
	}
	b, err = os.ReadFile(cleanupProm)
	if err != nil {
		t.Fatal(err)
	}
	if v := promValue(t, string(b), "cairn_cleanup_deleted_objects", `run="cleanup"`); v != cres.Deleted || v == 0 {
		t.Errorf("deleted %v, --json says %v", v, cres.Deleted)
	}
}
