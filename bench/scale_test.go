package bench

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/blockdiff"
	"github.com/cairn-backup/cairn/objstore"
)

// BenchmarkScale measures cairn-block, as child processes, on synthetic
// repositories of N blocks and 1,000 versions (blockdiff.Synthesize; see
// README.md, "Repositories at scale"): peak RSS and wall time of a backup of
// a 64 MiB image of new blocks (the index cache cold), of the image whose
// blocks the repository holds (cache warm), of a differential backup with
// empty hints, of ls, enforce latest7, scrub --all (the versions enforce
// kept, against the whole listing of data/ and the index as synthesized;
// only when every block has its data object) and cleanup --grace 0, in this
// order.
// N comes from $CAIRN_SCALE_BLOCKS (comma-separated, default 100000).
func BenchmarkScale(b *testing.B) {
	sizes := os.Getenv("CAIRN_SCALE_BLOCKS")
	if sizes == "" {
		sizes = "100000"
	}
	cairn := os.Getenv("CAIRN_BLOCK_BIN")
	if cairn == "" {
		cairn = filepath.Join(b.TempDir(), "cairn-block")
		if out, err := exec.Command("go", "build", "-o", cairn, "github.com/cairn-backup/cairn/cmd/cairn-block").CombinedOutput(); err != nil {
			b.Fatalf("build cairn-block: %v\n%s", err, out)
		}
	}
	for s := range strings.SplitSeq(sizes, ",") {
		n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
		if err != nil || n < 1000 {
			b.Fatalf("CAIRN_SCALE_BLOCKS: %q is not a block count >= 1000", s)
		}
		b.Run(fmt.Sprintf("blocks=%d", n), func(b *testing.B) { scale(b, cairn, n) })
	}
}

func scale(b *testing.B, cairn string, n int64) {
	versions := 1000
	if v, err := strconv.Atoi(os.Getenv("CAIRN_SCALE_VERSIONS")); err == nil && v > 10 {
		versions = v
	}
	every := int64(1)
	if n > 4_200_000 {
		every = 8 // / has 16M inodes: placeholders for every 8th block only
	}
	if e, err := strconv.ParseInt(os.Getenv("CAIRN_SCALE_DATA_EVERY"), 10, 64); err == nil && e > 0 {
		every = e
	}
	uncompacted := os.Getenv("CAIRN_SCALE_UNCOMPACTED") == "1"
	dir := filepath.Join(benchDir(b), fmt.Sprintf("scale-%d", n))
	_ = os.RemoveAll(dir) // every run starts from a fresh repository: enforce and cleanup change it
	defer os.RemoveAll(dir)
	repo := filepath.Join(dir, "repo")
	img, newImg := filepath.Join(dir, "img.raw"), filepath.Join(dir, "new.raw")
	t0 := time.Now()
	res := synthesize(b, repo, img, newImg, blockdiff.SynthOptions{Blocks: n, Versions: versions, DataEvery: every, Uncompacted: uncompacted})
	fmt.Fprintf(os.Stderr, "scale: synthesized %d blocks, %d versions, %d data objects, %d index objects in %s\n",
		res.Entries, res.Versions, res.DataObjects, res.IndexKeys, time.Since(t0).Round(time.Second))
	b.Logf("synthesized %d blocks, %d versions, %d data objects, %d index objects in %s (uncompacted=%v)",
		res.Entries, res.Versions, res.DataObjects, res.IndexKeys, time.Since(t0).Round(time.Second), uncompacted)
	env := append(os.Environ(), "CAIRN_CACHE_DIR="+filepath.Join(dir, "cache"))
	ops := []struct {
		name string
		args []string
	}{
		{"backup-new", []string{"backup", newImg, "bench-new"}},
		{"backup-known", []string{"backup", img, "img"}},
		{"backup-diff", []string{"backup", "--base", res.ImageVersion, "--hints", filepath.Join(dir, "hints.json"), img, "img"}},
		{"ls", []string{"ls", "--json"}},
		{"enforce", []string{"enforce", "latest7"}},
		{"scrub", []string{"scrub", "--all"}},
		{"cleanup", []string{"cleanup", "--grace", "0"}},
	}
	if err := os.WriteFile(filepath.Join(dir, "hints.json"), []byte("[]"), 0o644); err != nil {
		b.Fatal(err)
	}
	only := os.Getenv("CAIRN_SCALE_OPS") // e.g. "backup-new,backup-diff"
	b.ResetTimer()
	var line strings.Builder
	for _, op := range ops {
		if only != "" && !strings.Contains(","+only+",", ","+op.name+",") {
			continue
		}
		if op.name == "scrub" && every > 1 {
			// Most blocks have no data object: scrub would find them
			// missing and mark every version invalid, which changes
			// what cleanup does next.
			b.Logf("blocks=%d: scrub skipped (a data object for every %dth block only)", n, every)
			continue
		}
		args := append([]string{op.args[0], "--repo", repo, "--log-level", "warn"}, op.args[1:]...)
		d, rss := run(b, env, cairn, args...)
		b.ReportMetric(float64(rss)/(1<<20), op.name+"-MiB")
		b.ReportMetric(d.Seconds(), op.name+"-s")
		fmt.Fprintf(&line, " %s %.0f MiB %.2f s;", op.name, float64(rss)/(1<<20), d.Seconds())
		fmt.Fprintf(os.Stderr, "scale: blocks=%d %s: peak RSS %.0f MiB, %.2f s\n", n, op.name, float64(rss)/(1<<20), d.Seconds())
	}
	b.StopTimer()
	b.Logf("blocks=%d:%s", n, line.String())
}

// synthesize writes the synthetic repository and the two images.
func synthesize(b *testing.B, repo, img, newImg string, opts blockdiff.SynthOptions) *blockdiff.SynthResult {
	ctx := context.Background()
	if err := os.MkdirAll(repo, 0o755); err != nil {
		b.Fatal(err)
	}
	store, err := objstore.Open(ctx, "file://"+repo)
	if err != nil {
		b.Fatal(err)
	}
	defer store.Close()
	r, err := blockdiff.Init(ctx, store, blockdiff.InitConfig{}, blockdiff.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	opts.DataDir = filepath.Join(repo, "data")
	res, err := blockdiff.Synthesize(ctx, r, opts)
	if err != nil {
		b.Fatal(err)
	}
	for _, im := range []struct {
		path string
		seed uint64
	}{{img, 0}, {newImg, 1}} {
		if err := os.WriteFile(im.path, blockdiff.SynthImage(im.seed, 16, r.BlockSize()), 0o644); err != nil {
			b.Fatal(err)
		}
	}
	return res
}

// BenchmarkBackupUnchangedCompacted is BenchmarkBackupUnchanged with the
// index compacted (repair index writes one generation): every block is a
// filter hit looked up in its frame, beside the workers. "cached" reopens
// the repository with a warm index cache, "nocache" without any (every
// frame a ranged read of its pack).
func BenchmarkBackupUnchangedCompacted(b *testing.B) {
	img, spec := mixedImage(b)
	warm(b, img)
	r, dir := newRepo(b, "unchanged-compacted")
	base := backup(b, r, img, blockdiff.BackupOptions{})
	if _, err := r.RepairIndex(context.Background(), blockdiff.RepairIndexOptions{}); err != nil {
		b.Fatal(err)
	}
	for _, cached := range []bool{true, false} {
		name := map[bool]string{true: "cached", false: "nocache"}[cached]
		b.Run(name, func(b *testing.B) {
			s, err := objstore.Open(context.Background(), "file://"+dir)
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			opts := blockdiff.Options{}
			if cached {
				opts.CacheDir = filepath.Join(dir, "cache")
			}
			r2, err := blockdiff.Open(context.Background(), s, opts)
			if err != nil {
				b.Fatal(err)
			}
			defer r2.Close()
			var v *blockdiff.Version
			measured(b, spec.Size, func() {
				v = backup(b, r2, img, blockdiff.BackupOptions{Base: base.ID})
			})
			if v.Stats.BlocksNew != 0 {
				b.Fatalf("unchanged re-backup stored %d blocks", v.Stats.BlocksNew)
			}
		})
	}
}
