package bench

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/blockdiff"
	"github.com/cairn-backup/cairn/objstore"
)

// benchDir is where images and repositories live ($CAIRN_BENCH_DIR).
func benchDir(b *testing.B) string {
	d := os.Getenv("CAIRN_BENCH_DIR")
	if d == "" {
		d = filepath.Join(os.TempDir(), "cairn-bench")
	}
	if err := os.MkdirAll(d, 0o755); err != nil {
		b.Fatal(err)
	}
	return d
}

// imageSize is 4 GiB, or $CAIRN_BENCH_SIZE (in GiB) for a quicker run.
func imageSize(b *testing.B) int64 {
	if s := os.Getenv("CAIRN_BENCH_SIZE"); s != "" {
		g, err := strconv.ParseFloat(strings.TrimSuffix(strings.ToUpper(s), "G"), 64)
		if err != nil {
			b.Fatalf("CAIRN_BENCH_SIZE=%q: want GiB, e.g. 1 or 0.5", s)
		}
		return int64(g*(1<<30)) / UnitSize * UnitSize
	}
	return 4 << 30
}

var genMu sync.Mutex

// mixedImage returns the 4 GiB mixed image (generated on first use).
func mixedImage(b *testing.B) (string, ImageSpec) {
	spec := ImageSpec{Size: imageSize(b), DataEvery: 1, Seed: 2026}
	return image(b, fmt.Sprintf("mixed-%d.img", spec.Size), spec), spec
}

// sparseImage returns a 64 GiB image whose data is every 64th unit (1 GiB).
func sparseImage(b *testing.B) (string, ImageSpec) {
	spec := ImageSpec{Size: 16 * imageSize(b), DataEvery: 64, Seed: 64}
	return image(b, fmt.Sprintf("sparse-%d.img", spec.Size), spec), spec
}

func image(b *testing.B, name string, spec ImageSpec) string {
	genMu.Lock()
	defer genMu.Unlock()
	p := filepath.Join(benchDir(b), name)
	t0 := time.Now()
	if err := Generate(p, spec); err != nil {
		b.Fatal(err)
	}
	if d := time.Since(t0); d > time.Second {
		b.Logf("generated %s (%d bytes) in %s", p, spec.Size, d.Round(time.Second))
	}
	return p
}

// warm reads a file once so that every contender starts from the page cache.
func warm(b *testing.B, path string) {
	f, err := os.Open(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	if _, err := io.Copy(io.Discard, f); err != nil {
		b.Fatal(err)
	}
}

// resetPeakRSS frees what the Go heap can give back and resets the kernel's
// high-water mark, so peakRSS measures only what follows.
func resetPeakRSS(b *testing.B) {
	runtime.GC()
	debug.FreeOSMemory()
	if err := os.WriteFile("/proc/self/clear_refs", []byte("5"), 0); err != nil {
		b.Logf("cannot reset the RSS high-water mark: %v", err)
	}
}

// peakRSS returns VmHWM, the process's peak resident set, in bytes.
func peakRSS(b *testing.B) int64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			return kb << 10
		}
	}
	b.Fatal("no VmHWM in /proc/self/status")
	return 0
}

// newRepo initialises a file repository in a fresh directory;
// $CAIRN_BENCH_WORKERS and $CAIRN_BENCH_TRANSFERS override the number of CPU
// workers and of concurrent uploads.
func newRepo(b *testing.B, name string) (*blockdiff.Repository, string) {
	dir := filepath.Join(benchDir(b), "repo-"+name)
	if err := os.RemoveAll(dir); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { os.RemoveAll(dir) })
	s, err := objstore.Open(context.Background(), "file://"+dir)
	if err != nil {
		b.Fatal(err)
	}
	w, _ := strconv.Atoi(os.Getenv("CAIRN_BENCH_WORKERS"))
	t, _ := strconv.Atoi(os.Getenv("CAIRN_BENCH_TRANSFERS"))
	r, err := blockdiff.Init(context.Background(), s, blockdiff.InitConfig{}, blockdiff.Options{Workers: w, Transfers: t})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { r.Close(); s.Close() })
	return r, dir
}

// backup runs one backup of path.
func backup(b *testing.B, r *blockdiff.Repository, path string, opts blockdiff.BackupOptions) *blockdiff.Version {
	src, err := blockdiff.OpenFileSource(path)
	if err != nil {
		b.Fatal(err)
	}
	defer src.Close()
	opts.Volume = "bench"
	v, err := r.Backup(context.Background(), src, opts)
	if err != nil {
		b.Fatal(err)
	}
	return v
}

// measured times fn as the benchmark's only timed work and reports MB/s of
// size bytes and the peak RSS while it ran.
func measured(b *testing.B, size int64, fn func()) {
	b.SetBytes(size)
	var peak int64
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		resetPeakRSS(b)
		syscall.Sync()
		b.StartTimer()
		fn()
		b.StopTimer()
		peak = max(peak, peakRSS(b))
	}
	b.ReportMetric(float64(peak)/(1<<20), "peak-RSS-MiB")
}

// BenchmarkBackupFull backs up the mixed image into an empty file repository.
func BenchmarkBackupFull(b *testing.B) {
	img, spec := mixedImage(b)
	warm(b, img)
	var v *blockdiff.Version
	measured(b, spec.Size, func() {
		b.StopTimer()
		r, _ := newRepo(b, "full")
		b.StartTimer()
		v = backup(b, r, img, blockdiff.BackupOptions{})
	})
	b.Logf("full backup: %+v", v.Stats)
}

// BenchmarkBackupUnchanged backs up the same image again without hints:
// everything is read and hashed, nothing is stored.
func BenchmarkBackupUnchanged(b *testing.B) {
	img, spec := mixedImage(b)
	warm(b, img)
	r, _ := newRepo(b, "unchanged")
	base := backup(b, r, img, blockdiff.BackupOptions{})
	var v *blockdiff.Version
	measured(b, spec.Size, func() {
		v = backup(b, r, img, blockdiff.BackupOptions{Base: base.ID})
	})
	if v.Stats.BlocksNew != 0 {
		b.Fatalf("unchanged re-backup stored %d blocks", v.Stats.BlocksNew)
	}
	b.Logf("unchanged backup: %+v", v.Stats)
}

// BenchmarkBackupChanged1PctHints backs up a copy with 1% of its 4 MiB units
// changed, with rbd-diff hints naming exactly those extents.
func BenchmarkBackupChanged1PctHints(b *testing.B) {
	img, spec := mixedImage(b)
	changed := filepath.Join(benchDir(b), "changed.img")
	hintsJSON, err := Change(img, changed, spec)
	if err != nil {
		b.Fatal(err)
	}
	defer os.Remove(changed)
	hints, err := blockdiff.ParseRBDDiff(bytes.NewReader(hintsJSON))
	if err != nil {
		b.Fatal(err)
	}
	r, _ := newRepo(b, "hints")
	base := backup(b, r, img, blockdiff.BackupOptions{})
	warm(b, changed)
	var v *blockdiff.Version
	measured(b, spec.Size, func() {
		v = backup(b, r, changed, blockdiff.BackupOptions{Base: base.ID, Hints: hints})
	})
	b.Logf("1%%-changed backup with %d hints: %+v", len(hints), v.Stats)
}

// BenchmarkRestore restores the mixed image from a file repository into a
// new (sparse) file.
func BenchmarkRestore(b *testing.B) {
	img, spec := mixedImage(b)
	r, dir := newRepo(b, "restore")
	v := backup(b, r, img, blockdiff.BackupOptions{})
	out := filepath.Join(benchDir(b), "restored.img")
	defer os.Remove(out)
	warm(b, dir+"/config") // the repository's objects are in the page cache from the backup
	measured(b, spec.Size, func() {
		os.Remove(out)
		if err := r.RestoreFile(context.Background(), v.ID, out, blockdiff.RestoreFileOptions{}); err != nil {
			b.Fatal(err)
		}
	})
}

// BenchmarkCompareRestic backs up the same images with cairn-block and
// restic (Debian's 0.14), each as a child process into a fresh repository,
// and reports both throughputs and peak RSS. Both repositories are encrypted
// (restic always is) and compressed (restic's default "auto").
func BenchmarkCompareRestic(b *testing.B) {
	restic, err := exec.LookPath("restic")
	if err != nil {
		b.Skip("restic is not installed (apt-get install restic): skipping the comparison")
	}
	out, _ := exec.Command(restic, "version").Output()
	b.Logf("peer: %s", strings.TrimSpace(string(out)))
	cairn := os.Getenv("CAIRN_BLOCK_BIN") // a prebuilt binary, or build one now
	if cairn == "" {
		cairn = filepath.Join(b.TempDir(), "cairn-block")
		if out, err := exec.Command("go", "build", "-o", cairn, "github.com/cairn-backup/cairn/cmd/cairn-block").CombinedOutput(); err != nil {
			b.Fatalf("build cairn-block: %v\n%s", err, out)
		}
	}
	b.Run("mixed-4GiB", func(b *testing.B) {
		img, spec := mixedImage(b)
		warm(b, img)
		compare(b, cairn, restic, img, spec.Size)
	})
	b.Run("sparse-64GiB", func(b *testing.B) {
		img, spec := sparseImage(b)
		compare(b, cairn, restic, img, spec.Size)
	})
}

// compare backs up img with each tool, alternating, $CAIRN_BENCH_ROUNDS
// times (default 3), and reports the best round of each: this machine is
// shared, and the best round is the one least disturbed by its neighbours.
// Every round is a full backup into a fresh repository.
func compare(b *testing.B, cairn, restic, img string, size int64) {
	rounds := 3
	if n, err := strconv.Atoi(os.Getenv("CAIRN_BENCH_ROUNDS")); err == nil && n > 0 {
		rounds = n
	}
	var ct, rt time.Duration
	var crss, rrss int64
	b.ResetTimer()
	for range rounds {
		d, rss := fullBackup(b, cairn, img, "cairn")
		if ct == 0 || d < ct {
			ct, crss = d, rss
		}
		d, rss = fullBackup(b, restic, img, "restic")
		if rt == 0 || d < rt {
			rt, rrss = d, rss
		}
	}
	b.StopTimer()
	mbs := func(d time.Duration) float64 { return float64(size) / 1e6 / d.Seconds() }
	b.ReportMetric(mbs(ct), "cairn-MB/s")
	b.ReportMetric(mbs(rt), "restic-MB/s")
	b.ReportMetric(mbs(ct)/mbs(rt), "speedup-x")
	b.ReportMetric(float64(crss)/(1<<20), "cairn-peak-RSS-MiB")
	b.ReportMetric(float64(rrss)/(1<<20), "restic-peak-RSS-MiB")
	b.ReportMetric(float64(crss)/float64(rrss), "RSS-ratio")
	b.Logf("%s, best of %d: cairn %.0f MB/s %.0f MiB; restic %.0f MB/s %.0f MiB",
		filepath.Base(img), rounds, mbs(ct), float64(crss)/(1<<20), mbs(rt), float64(rrss)/(1<<20))
}

// fullBackup initialises a fresh encrypted repository for tool (restic always
// encrypts, so cairn does too) and times one backup of img into it.
func fullBackup(b *testing.B, bin, img, tool string) (time.Duration, int64) {
	dir := b.TempDir()
	env := append(os.Environ(), "CAIRN_PASSWORD=bench-passphrase", "RESTIC_PASSWORD=bench-passphrase",
		"RESTIC_CACHE_DIR="+filepath.Join(dir, "cache"))
	repo := filepath.Join(dir, "repo")
	defer os.RemoveAll(dir)
	if tool == "restic" {
		run(b, env, bin, "init", "--repo", repo, "-q")
		return run(b, env, bin, "backup", "--repo", repo, "-q", img)
	}
	run(b, env, bin, "init", "--encrypt", "--repo", repo, "--log-level", "warn")
	return run(b, env, bin, "backup", "--repo", repo, "--log-level", "warn", img, "bench")
}

// run runs a child process and returns its wall time and peak RSS. The
// child's own rusage is useless here: Linux carries the parent's RSS high-water
// mark across fork and exec into the child's ru_maxrss, so the peak is taken
// from GNU time (which forks from a small process), or else by polling VmHWM.
func run(b *testing.B, env []string, name string, args ...string) (time.Duration, int64) {
	syscall.Sync() // start every contender without the previous one's dirty pages
	rssFile := filepath.Join(b.TempDir(), "maxrss")
	cmd := exec.Command(name, args...)
	gnuTime, err := exec.LookPath("/usr/bin/time")
	if err == nil {
		cmd = exec.Command(gnuTime, append([]string{"-f", "%M", "-o", rssFile, name}, args...)...)
	}
	cmd.Env = env
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	t0 := time.Now()
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	var polled atomic.Int64
	stop := make(chan struct{})
	if gnuTime == "" {
		go pollHWM(cmd.Process.Pid, &polled, stop)
	}
	err = cmd.Wait()
	d := time.Since(t0)
	close(stop)
	if err != nil {
		b.Fatalf("%s %v: %v\n%s", filepath.Base(name), args, err, stderr.String())
	}
	if gnuTime == "" {
		return d, polled.Load()
	}
	out, err := os.ReadFile(rssFile)
	if err != nil {
		b.Fatal(err)
	}
	kb, err := strconv.ParseInt(strings.TrimSpace(string(out)), 10, 64)
	if err != nil {
		b.Fatalf("GNU time printed %q", out)
	}
	return d, kb << 10
}

// pollHWM records the highest VmHWM of pid until stop closes.
func pollHWM(pid int, peak *atomic.Int64, stop <-chan struct{}) {
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		if err != nil {
			continue
		}
		for line := range strings.SplitSeq(string(b), "\n") {
			if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
				kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
				peak.Store(max(peak.Load(), kb<<10))
			}
		}
	}
}
