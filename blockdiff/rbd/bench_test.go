//go:build ceph

package rbd

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"sync"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/blockdiff"
	"github.com/cairn-backup/cairn/objstore"
)

// BenchmarkBackupRBD measures backups of a 1 GiB RBD image (4 MiB blocks of
// pseudo-random data, so zstd stores them as they are) into an in-memory
// repository, against `rbd export` of the same snapshot to /dev/null in the
// same run. MB/s is image bytes per second:
//
//   - full: Benji's workflow on a fresh repository (snapshot, full read of
//     every allocated block, hash, store, rotation);
//   - changed-1pct: the same workflow after 1% of the image (3 scattered
//     4 MiB objects, 12 MiB) was rewritten since the previous backup: diff,
//     read of the changed extents and of the verification sample, rotation;
//   - source-read: the Source alone, the snapshot read block by block by
//     two readers (blockdiff's worker count here), no hashing or storing;
//   - rbd-export: `rbd export POOL/IMAGE@SNAP -` to /dev/null.
//
// Run: scripts/testenv up ceph, then
// go test -tags 'ceph pacific' -run '^$' -bench BackupRBD -benchtime 3x ./blockdiff/rbd/
func BenchmarkBackupRBD(b *testing.B) {
	const size = 1 << 30
	c := newCluster(b)
	name, img := c.image(b, size)
	u := URL{Pool: c.env.Pool, Image: name}
	for off := int64(0); off < size; off += bs {
		write(b, img, off, pattern(uint64(off/bs), bs))
	}
	newMemRepo := func() *blockdiff.Repository {
		s, err := objstore.Open(b.Context(), fmt.Sprintf("mem://bench-%d", time.Now().UnixNano()))
		if err != nil {
			b.Fatal(err)
		}
		r, err := blockdiff.Init(b.Context(), s, blockdiff.InitConfig{BlockSize: bs}, blockdiff.Options{})
		if err != nil {
			b.Fatal(err)
		}
		return r
	}
	day := time.Date(2026, 1, 1, 7, 30, 0, 0, time.UTC)
	next := func() func() time.Time { day = day.Add(24 * time.Hour); return clock(day) }

	b.Run("full", func(b *testing.B) {
		b.SetBytes(size)
		var read int64
		for b.Loop() {
			b.StopTimer()
			r := newMemRepo()
			b.StartTimer()
			res, err := c.conn.Backup(b.Context(), r, u, BackupOptions{Volume: "bench", Now: next()})
			if err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			read += res.BytesRead
			r.Close()
			b.StartTimer()
		}
		b.ReportMetric(float64(read)/float64(b.N), "read-B/op")
	})

	b.Run("changed-1pct", func(b *testing.B) {
		r := newMemRepo()
		defer r.Close()
		if _, err := c.conn.Backup(b.Context(), r, u, BackupOptions{Volume: "bench", Now: next()}); err != nil {
			b.Fatal(err)
		}
		b.SetBytes(size)
		var read int64
		round := 0
		b.ResetTimer()
		for b.Loop() {
			b.StopTimer()
			round++
			for k := range int64(3) { // 3 x 4 MiB = 1.2% of 1 GiB, spread out
				blk := (int64(round)*97 + k*85) % (size / bs)
				write(b, img, blk*bs, pattern(uint64(1000*round)+uint64(k), bs))
			}
			b.StartTimer()
			res, err := c.conn.Backup(b.Context(), r, u, BackupOptions{Volume: "bench", Now: next()})
			if err != nil {
				b.Fatal(err)
			}
			if res.Base == "" {
				b.Fatalf("not differential: %s", res.FullReason)
			}
			read += res.BytesRead
		}
		b.ReportMetric(float64(read)/float64(b.N), "read-B/op")
	})

	snap := "bench-export"
	if _, err := img.CreateSnapshot(snap); err != nil {
		b.Fatal(err)
	}
	b.Run("source-read", func(b *testing.B) {
		src, err := c.conn.OpenSnapshot(URL{Pool: u.Pool, Image: u.Image, Snapshot: snap})
		if err != nil {
			b.Fatal(err)
		}
		defer src.Close()
		b.SetBytes(size)
		for b.Loop() {
			var wg sync.WaitGroup
			next := make(chan int64)
			for range 2 { // blockdiff's default workers on this 2-core machine
				wg.Go(func() {
					buf := make([]byte, bs)
					for off := range next {
						if _, err := src.ReadAt(buf, off); err != nil {
							b.Error(err)
						}
					}
				})
			}
			for off := int64(0); off < size; off += bs {
				next <- off
			}
			close(next)
			wg.Wait()
		}
	})

	b.Run("rbd-export", func(b *testing.B) {
		devnull, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
		if err != nil {
			b.Fatal(err)
		}
		defer devnull.Close()
		b.SetBytes(size)
		for b.Loop() {
			cmd := exec.Command("rbd", "--conf", c.env.Conf, "export", u.Spec()+"@"+snap, "-")
			var stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = devnull, &stderr
			if err := cmd.Run(); err != nil {
				b.Fatalf("rbd export: %v\n%s", err, stderr.Bytes())
			}
		}
	})
}
