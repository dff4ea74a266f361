package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/objstore"
	_ "github.com/cairn-backup/cairn/objstore/s3" // s3:// for the radosgw rounds
)

// BenchmarkSpeed is issue 20's side-by-side: cairn-block, restic and (when
// installed) kopia back up and restore the same mixed image (2 GiB by
// default: written zeros, holes, random and text-like blocks), each as a
// child process, in alternating rounds (the order flips every round), with
// the repository in RAM (/dev/shm), on disk, and on the real S3 server
// (radosgw, when $S3_ENDPOINT is set: `source /tmp/cairn-shared-env/env`).
// Restores go to a new file in the same place as the repository (on disk for
// S3) and count their final fsync; each is compared with `dd conv=fsync` of
// the image to the same folder in the same round (and with
// `dd conv=sparse,fsync`, which writes the same bytes a sparse restore
// writes). Medians of the rounds are reported: MB/s (the image's apparent
// size over wall time), CPU seconds (user+system of the child, from its
// rusage), and the ratios cairn/restic and restore/dd. cairn backs up twice
// per round: encrypted (as restic always is) and unencrypted ("cairn-plain").
func BenchmarkSpeed(b *testing.B) {
	tools := speedTools(b)
	size := speedSize(b, "CAIRN_SPEED_SIZE", 2)
	ram := envOr("CAIRN_SPEED_RAM", "/dev/shm/cairn-speed")
	disk := envOr("CAIRN_SPEED_DISK", filepath.Join(os.TempDir(), "cairn-speed"))
	img := speedImage(b, ram, size)
	b.Run("ram", func(b *testing.B) {
		speedRounds(b, tools, img, size, dirSite(b, ram))
	})
	b.Run("disk", func(b *testing.B) {
		speedRounds(b, tools, img, size, dirSite(b, disk))
	})
	b.Run("s3", func(b *testing.B) {
		ep := os.Getenv("S3_ENDPOINT")
		if ep == "" {
			b.Skip("S3_ENDPOINT is not set (source /tmp/cairn-shared-env/env, or scripts/testenv up): skipping the radosgw rounds")
		}
		s3size := speedSize(b, "CAIRN_SPEED_S3_SIZE", 1) // the test server keeps objects in RAM (memstore)
		s3img := img
		if s3size != size {
			s3img = speedImage(b, ram, s3size)
		}
		speedRounds(b, tools, s3img, s3size, s3Site(b, ep, disk))
	})
}

// speedTools finds the contenders: a cairn-block built from this tree (or
// $CAIRN_BLOCK_BIN), restic (required: scripts/bench-tools.sh installs it)
// and kopia when it is on PATH.
type speedToolset struct{ cairn, base, restic, kopia string }

func speedTools(b *testing.B) speedToolset {
	var t speedToolset
	var err error
	if t.restic, err = exec.LookPath("restic"); err != nil {
		b.Skip("restic is not installed (scripts/bench-tools.sh): skipping the comparison")
	}
	out, _ := exec.Command(t.restic, "version").Output()
	b.Logf("peer: %s", strings.TrimSpace(string(out)))
	if t.kopia, err = exec.LookPath("kopia"); err == nil {
		out, _ := exec.Command(t.kopia, "--version").Output()
		b.Logf("peer: kopia %s", strings.TrimSpace(string(out)))
	} else {
		t.kopia = ""
		b.Logf("kopia is not installed: compared with restic only")
	}
	// $CAIRN_BLOCK_BASE_BIN: a second cairn-block (say, built from the
	// commit before a change) measured in the same rounds as "base".
	t.base = os.Getenv("CAIRN_BLOCK_BASE_BIN")
	t.cairn = os.Getenv("CAIRN_BLOCK_BIN")
	if t.cairn == "" {
		t.cairn = filepath.Join(b.TempDir(), "cairn-block")
		if out, err := exec.Command("go", "build", "-o", t.cairn, "github.com/cairn-backup/cairn/cmd/cairn-block").CombinedOutput(); err != nil {
			b.Fatalf("build cairn-block: %v\n%s", err, out)
		}
	}
	return t
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

// speedSize reads a size in GiB from the environment.
func speedSize(b *testing.B, env string, def float64) int64 {
	g := def
	if s := os.Getenv(env); s != "" {
		var err error
		if g, err = strconv.ParseFloat(s, 64); err != nil || g <= 0 {
			b.Fatalf("%s=%q: want GiB, e.g. 2 or 0.5", env, s)
		}
	}
	return int64(g*(1<<30)) / UnitSize * UnitSize
}

// speedImage generates (once) the mixed image of size bytes in dir.
func speedImage(b *testing.B, dir string, size int64) string {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		b.Fatal(err)
	}
	spec := ImageSpec{Size: size, DataEvery: 1, Seed: 2026}
	genMu.Lock()
	defer genMu.Unlock()
	p := filepath.Join(dir, fmt.Sprintf("mixed-%d.img", size))
	if err := Generate(p, spec); err != nil {
		b.Fatal(err)
	}
	warm(b, p)
	return p
}

// site is where one set of rounds keeps its repositories and restores.
type site struct {
	name    string
	scratch string                         // a folder for restores, dd and caches
	cairn   func(tag string) string        // cairn-block's --repo
	restic  func(tag string) string        // restic's -r
	kopia   func(tag string) []string      // kopia repository create/connect's arguments
	drop    func(b *testing.B, tag string) // removes a repository
	dd      bool                           // compare restores with dd (not for S3: the network is the limit)
}

// dirSite keeps repositories in folders under dir.
func dirSite(b *testing.B, dir string) *site {
	scratch := filepath.Join(dir, "run")
	if err := os.RemoveAll(scratch); err != nil {
		b.Fatal(err)
	}
	if err := os.MkdirAll(scratch, 0o755); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { os.RemoveAll(scratch) })
	repo := func(tag string) string { return filepath.Join(scratch, "repo-"+tag) }
	return &site{
		name: dir, scratch: scratch, dd: true,
		cairn:  repo,
		restic: repo,
		kopia:  func(tag string) []string { return []string{"filesystem", "--path", repo(tag)} },
		drop: func(b *testing.B, tag string) {
			if err := os.RemoveAll(repo(tag)); err != nil {
				b.Fatal(err)
			}
		},
	}
}

// s3Site keeps repositories in the bucket cairn-speed (created when
// missing) of the S3 server at endpoint, under a prefix per run and
// repository, each emptied as soon as its round is done (the test server
// holds its objects in RAM); restores go to scratch on disk.
func s3Site(b *testing.B, endpoint, disk string) *site {
	region := envOr("AWS_REGION", "us-east-1")
	bucket := envOr("CAIRN_SPEED_BUCKET", "cairn-speed")
	run := fmt.Sprintf("run-%d", time.Now().UnixNano())
	scratch := filepath.Join(disk, "run-s3")
	if err := os.MkdirAll(scratch, 0o755); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { os.RemoveAll(scratch) })
	url := func(tag string) string {
		return "s3://" + bucket + "/" + run + "/" + tag + "?endpoint=" + endpoint + "&region=" + region + "&path_style=true"
	}
	ctx := context.Background()
	s, err := objstore.Open(ctx, url("x"))
	if err != nil {
		b.Fatal(err)
	}
	if bk, ok := s.(objstore.Bucketer); ok {
		if err := bk.EnsureBucket(ctx, true); err != nil {
			b.Fatal(err)
		}
	}
	s.Close()
	host := strings.TrimPrefix(strings.TrimPrefix(endpoint, "http://"), "https://")
	return &site{
		name: "s3 " + endpoint + " bucket " + bucket, scratch: scratch,
		cairn:  func(tag string) string { return url(tag) },
		restic: func(tag string) string { return "s3:" + endpoint + "/" + bucket + "/" + run + "/" + tag },
		kopia: func(tag string) []string {
			return []string{"s3", "--bucket", bucket, "--prefix", run + "/" + tag + "/", "--endpoint", host,
				"--disable-tls", "--access-key", os.Getenv("AWS_ACCESS_KEY_ID"), "--secret-access-key", os.Getenv("AWS_SECRET_ACCESS_KEY")}
		},
		drop: func(b *testing.B, tag string) { emptyPrefix(b, url(tag)) },
	}
}

// emptyPrefix deletes every object of the store at url, 16 at a time.
func emptyPrefix(b *testing.B, url string) {
	ctx := context.Background()
	s, err := objstore.Open(ctx, url)
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	keys := make(chan string)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	for range 16 {
		wg.Go(func() {
			for k := range keys {
				if err := s.Delete(ctx, k); err != nil {
					mu.Lock()
					firstErr = cmpOr(firstErr, err)
					mu.Unlock()
				}
			}
		})
	}
	for o, err := range s.List(ctx, "") {
		if err != nil {
			firstErr = cmpOr(firstErr, err)
			break
		}
		keys <- o.Key
	}
	close(keys)
	wg.Wait()
	if firstErr != nil {
		b.Fatalf("empty %s: %v", url, firstErr)
	}
}

func cmpOr(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

// meas is one child's wall time, CPU time and peak RSS.
type meas struct {
	wall, cpu time.Duration
	rss       int64
}

// child runs a process like run does, and also returns its CPU time (user +
// system, which includes the children it waited for) and its stdout.
func child(b *testing.B, env []string, name string, args ...string) (meas, string) {
	syscall.Sync() // start every contender without the previous one's dirty pages
	rssFile := filepath.Join(b.TempDir(), "maxrss")
	cmd := exec.Command("/usr/bin/time", append([]string{"-f", "%M", "-o", rssFile, name}, args...)...)
	if _, err := os.Stat("/usr/bin/time"); err != nil {
		cmd = exec.Command(name, args...) // peak RSS unknown
	}
	cmd.Env = env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	t0 := time.Now()
	err := cmd.Run()
	m := meas{wall: time.Since(t0)}
	if err != nil {
		b.Fatalf("%s %v: %v\n%s", filepath.Base(name), args, err, stderr.String())
	}
	m.cpu = cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	if out, err := os.ReadFile(rssFile); err == nil {
		kb, _ := strconv.ParseInt(strings.TrimSpace(string(out)), 10, 64)
		m.rss = kb << 10
	}
	return m, stdout.String()
}

// fsyncFile syncs a restored file, for the peers that do not (restic 0.14):
// restores are compared with their data on disk.
func fsyncFile(b *testing.B, path string) time.Duration {
	t0 := time.Now()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		b.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		b.Fatal(err)
	}
	f.Close()
	return time.Since(t0)
}

// sameFile fails b when the two files' bytes differ.
func sameFile(b *testing.B, x, y string) {
	fx, err := os.Open(x)
	if err != nil {
		b.Fatal(err)
	}
	defer fx.Close()
	fy, err := os.Open(y)
	if err != nil {
		b.Fatal(err)
	}
	defer fy.Close()
	bx, by := make([]byte, 4<<20), make([]byte, 4<<20)
	for off := int64(0); ; off += int64(len(bx)) {
		nx, ex := io.ReadFull(fx, bx)
		ny, _ := io.ReadFull(fy, by)
		if nx != ny || !bytes.Equal(bx[:nx], by[:ny]) {
			b.Fatalf("%s differs from %s near offset %d", y, x, off)
		}
		if ex != nil {
			return
		}
	}
}

// loadAvg returns the 1-minute load average.
func loadAvg() float64 {
	raw, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(raw))
	if len(f) == 0 {
		return -1
	}
	l, _ := strconv.ParseFloat(f[0], 64)
	return l
}

// speedRounds runs the rounds at one site and reports the medians.
func speedRounds(b *testing.B, tools speedToolset, img string, size int64, st *site) {
	rounds := 3
	if n, err := strconv.Atoi(os.Getenv("CAIRN_BENCH_ROUNDS")); err == nil && n > 0 {
		rounds = n
	}
	res := map[string][]meas{}
	add := func(k string, m meas) { res[k] = append(res[k], m) }
	env := append(os.Environ(), "CAIRN_PASSWORD=bench-passphrase", "RESTIC_PASSWORD=bench-passphrase",
		"KOPIA_PASSWORD=bench-passphrase", "CAIRN_CACHE_DIR="+filepath.Join(st.scratch, "cairn-cache"),
		"RESTIC_CACHE_DIR="+filepath.Join(st.scratch, "restic-cache"))
	out := filepath.Join(st.scratch, "restored.img")
	var loads []float64
	b.ResetTimer()
	for r := range rounds {
		loads = append(loads, loadAvg())
		steps := []func(){
			func() { cairnRound(b, tools.cairn, "cairn", env, st, r, img, out, add) },
			func() { // cairn, unencrypted: backup only
				tag := fmt.Sprintf("plain-%d", r)
				repo := st.cairn(tag)
				plain := slices.DeleteFunc(slices.Clone(env), func(e string) bool { return strings.HasPrefix(e, "CAIRN_PASSWORD=") })
				child(b, plain, tools.cairn, "init", "--create-bucket="+strconv.FormatBool(strings.HasPrefix(repo, "s3:")), "--repo", repo, "--log-level", "warn")
				m, _ := child(b, plain, tools.cairn, "backup", "--repo", repo, "--log-level", "warn", img, "bench")
				add("cairn-plain-backup", m)
				st.drop(b, tag)
			},
			func() { // restic: backup, restore + fsync
				tag := fmt.Sprintf("restic-%d", r)
				repo := st.restic(tag)
				child(b, env, tools.restic, "init", "-r", repo, "-q")
				m, _ := child(b, env, tools.restic, "backup", "-r", repo, "-q", img)
				add("restic-backup", m)
				target := filepath.Join(st.scratch, "restic-target")
				os.RemoveAll(target)
				m, _ = child(b, env, tools.restic, "restore", "-r", repo, "-q", "latest", "--target", target)
				m.wall += fsyncFile(b, filepath.Join(target, img))
				add("restic-restore", m)
				if r == 0 {
					sameFile(b, img, filepath.Join(target, img))
				}
				os.RemoveAll(target)
				st.drop(b, tag)
			},
		}
		if tools.base != "" {
			steps = append(steps, func() { cairnRound(b, tools.base, "base", env, st, r, img, out, add) })
		}
		if tools.kopia != "" {
			steps = append(steps, func() { kopiaRound(b, tools.kopia, env, st, fmt.Sprintf("kopia-%d", r), img, add) })
		}
		if st.dd {
			steps = append(steps, func() {
				add("dd", dd(b, img, out, "fsync"))
				os.Remove(out)
				add("dd-sparse", dd(b, img, out, "sparse,fsync"))
				os.Remove(out)
			})
		}
		if r%2 == 1 {
			slices.Reverse(steps)
		}
		for _, s := range steps {
			s()
		}
	}
	loads = append(loads, loadAvg())
	b.StopTimer()
	reportSpeed(b, st, res, size, rounds, loads)
}

// cairnRound backs up img into a new encrypted repository with the
// cairn-block at bin and restores it; results go under name ("cairn", or
// "base" for $CAIRN_BLOCK_BASE_BIN).
func cairnRound(b *testing.B, bin, name string, env []string, st *site, r int, img, out string, add func(string, meas)) {
	tag := fmt.Sprintf("%s-%d", name, r)
	repo := st.cairn(tag)
	child(b, env, bin, "init", "--encrypt", "--create-bucket="+strconv.FormatBool(strings.HasPrefix(repo, "s3:")), "--repo", repo, "--log-level", "warn")
	m, id := child(b, env, bin, "backup", "--repo", repo, "--log-level", "warn", img, "bench")
	add(name+"-backup", m)
	os.Remove(out)
	m, _ = child(b, env, bin, "restore", "--repo", repo, "--log-level", "warn", strings.TrimSpace(id), out)
	m.wall += fsyncFile(b, out) // already synced by cairn: a no-op, for symmetry
	add(name+"-restore", m)
	if r == 0 {
		sameFile(b, img, out)
	}
	os.Remove(out)
	st.drop(b, tag)
}

// kopiaRound backs up and restores with kopia; its failures are logged,
// not fatal (kopia is optional and its command line changes between
// releases).
func kopiaRound(b *testing.B, kopia string, env []string, st *site, tag, img string, add func(string, meas)) {
	cfg := filepath.Join(st.scratch, tag+".config")
	env = append(env, "KOPIA_CONFIG_PATH="+cfg, "KOPIA_CACHE_DIRECTORY="+filepath.Join(st.scratch, "kopia-cache"),
		"KOPIA_CHECK_FOR_UPDATES=false")
	defer os.Remove(cfg)
	defer st.drop(b, tag)
	try := func(args ...string) (meas, string, bool) {
		cmd := exec.Command(kopia, args...)
		cmd.Env = env
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		syscall.Sync()
		t0 := time.Now()
		err := cmd.Run()
		m := meas{wall: time.Since(t0)}
		if err != nil {
			b.Logf("kopia %v: %v\n%s", args, err, stderr.String())
			return m, "", false
		}
		m.cpu = cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
		return m, stdout.String(), true
	}
	if _, _, ok := try(append([]string{"repository", "create"}, st.kopia(tag)...)...); !ok {
		return
	}
	if _, _, ok := try("policy", "set", "--global", "--compression", "zstd"); !ok {
		return
	}
	m, js, ok := try("snapshot", "create", "--json", img)
	if !ok {
		return
	}
	add("kopia-backup", m)
	var snap struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal([]byte(js), &snap); err != nil || snap.ID == "" {
		b.Logf("kopia snapshot create printed no id: %q", js)
		return
	}
	out := filepath.Join(st.scratch, "kopia-restored.img")
	os.Remove(out)
	if m, _, ok = try("snapshot", "restore", snap.ID, out); ok {
		m.wall += fsyncFile(b, out)
		add("kopia-restore", m)
	}
	os.Remove(out)
}

// dd copies img to out with dd's conv flags (fsync, or sparse,fsync).
func dd(b *testing.B, img, out, conv string) meas {
	m, _ := child(b, os.Environ(), "dd", "if="+img, "of="+out, "bs=4M", "conv="+conv, "status=none")
	return m
}

// median returns the median wall and CPU time of ms.
func median(ms []meas) (wall, cpu time.Duration) {
	w := make([]time.Duration, len(ms))
	c := make([]time.Duration, len(ms))
	for i, m := range ms {
		w[i], c[i] = m.wall, m.cpu
	}
	slices.Sort(w)
	slices.Sort(c)
	return w[len(w)/2], c[len(c)/2]
}

// reportSpeed reports and logs the medians.
func reportSpeed(b *testing.B, st *site, res map[string][]meas, size int64, rounds int, loads []float64) {
	mbs := map[string]float64{}
	var lines []string
	for _, k := range []string{"cairn-backup", "cairn-plain-backup", "base-backup", "restic-backup", "kopia-backup",
		"cairn-restore", "base-restore", "restic-restore", "kopia-restore", "dd", "dd-sparse"} {
		ms := res[k]
		if len(ms) == 0 {
			continue
		}
		w, c := median(ms)
		mbs[k] = float64(size) / 1e6 / w.Seconds()
		b.ReportMetric(mbs[k], k+"-MB/s")
		b.ReportMetric(c.Seconds(), k+"-CPU-s")
		var all []string
		for _, m := range ms {
			all = append(all, fmt.Sprintf("%.2fs/%.2fcpu-s/%.0fMiB", m.wall.Seconds(), m.cpu.Seconds(), float64(m.rss)/(1<<20)))
		}
		lines = append(lines, fmt.Sprintf("  %-19s %7.0f MB/s %6.2f CPU-s  (rounds: %s)", k, mbs[k], c.Seconds(), strings.Join(all, " ")))
	}
	ratio := func(name, x, y string) {
		if mbs[x] > 0 && mbs[y] > 0 {
			b.ReportMetric(mbs[x]/mbs[y], name)
			lines = append(lines, fmt.Sprintf("  %-19s %7.2f", name, mbs[x]/mbs[y]))
		}
	}
	ratio("backup-cairn/restic", "cairn-backup", "restic-backup")
	ratio("backup-plain/enc", "cairn-plain-backup", "cairn-backup")
	ratio("restore-cairn/restic", "cairn-restore", "restic-restore")
	ratio("backup-cairn/kopia", "cairn-backup", "kopia-backup")
	ratio("restore-cairn/kopia", "cairn-restore", "kopia-restore")
	ratio("backup-cairn/base", "cairn-backup", "base-backup")
	ratio("restore-cairn/base", "cairn-restore", "base-restore")
	ratio("restore-cairn/dd", "cairn-restore", "dd")
	ratio("restore-cairn/dd-sparse", "cairn-restore", "dd-sparse")
	ratio("restore-base/dd", "base-restore", "dd")
	ratio("restore-restic/dd", "restic-restore", "dd")
	b.Logf("%s, %d MiB image, medians of %d alternating rounds, load average (1 min) %v:\n%s",
		st.name, size>>20, rounds, loads, strings.Join(lines, "\n"))
}
