package bench

import (
	"bytes"
	"os"
	"runtime"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/internal/zstdenc"
	"github.com/klauspost/compress/zstd"
	"lukechampine.com/blake3"
)

// BenchmarkFloor measures the least CPU any block backup of BenchmarkSpeed's
// image can spend with cairn's algorithms: reading every unit (pread from
// the page cache), BLAKE3 of every unit holding data, and zstd at its
// fastest level (cairn's encoder, internal/zstdenc: libzstd with cgo) of every
// distinct unit that zstd shrinks — nothing else: no pipeline, no
// encryption, no writes. One locked thread per core shares the units (as
// a backup's workers do, so cores that slow each other down count) and
// times each step by its own rusage, so other load barely moves it.
// cairn-block's CPU seconds in BenchmarkSpeed divided by floor-CPU-s is its
// overhead; size / (floor-CPU-s / cores) is the fastest a backup could be.
//
//	go test ./bench -run '^$' -bench Floor -benchtime 1x -v
func BenchmarkFloor(b *testing.B) {
	size := speedSize(b, "CAIRN_SPEED_SIZE", 2)
	img := speedImage(b, envOr("CAIRN_SPEED_RAM", "/dev/shm/cairn-speed"), size)
	f, err := os.Open(img)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	var read, hash, comp time.Duration
	var compressed, stored int64
	for b.Loop() {
		read, hash, comp, compressed, stored = 0, 0, 0, 0, 0
		var mu sync.Mutex
		seen := map[[32]byte]bool{}
		firstSeen := func(sum [32]byte) bool {
			mu.Lock()
			defer mu.Unlock()
			if seen[sum] {
				return false
			}
			seen[sum] = true
			return true
		}
		// One thread per core, as a backup's workers run; each takes every
		// n-th unit.
		var wg sync.WaitGroup
		n := runtime.GOMAXPROCS(0)
		for w := range n {
			wg.Go(func() {
				runtime.LockOSThread()
				defer runtime.UnlockOSThread()
				enc, err := zstdenc.New(zstd.SpeedFastest, 1)
				if err != nil {
					b.Error(err)
					return
				}
				defer enc.Close()
				buf := make([]byte, UnitSize)
				out := make([]byte, 0, UnitSize+UnitSize/64)
				var r, h, c time.Duration
				var in, st int64
				for off := int64(w) * UnitSize; off < size; off += int64(n) * UnitSize {
					t := threadCPU()
					if _, err := f.ReadAt(buf, off); err != nil {
						b.Error(err)
						return
					}
					zero := isZeroes(buf)
					r += threadCPU() - t
					if zero {
						continue
					}
					t = threadCPU()
					sum := blake3.Sum256(buf)
					h += threadCPU() - t
					if !firstSeen(sum) {
						continue
					}
					t = threadCPU()
					out, err = enc.Compress(out[:0], buf)
					d := threadCPU() - t
					if err != nil {
						b.Error(err)
						return
					}
					if len(out) < len(buf)*95/100 { // cairn stores the rest raw, skipped by its entropy test
						c += d
						in += int64(len(buf))
						st += int64(len(out))
					}
				}
				mu.Lock()
				read, hash, comp, compressed, stored = read+r, hash+h, comp+c, compressed+in, stored+st
				mu.Unlock()
			})
		}
		wg.Wait()
	}
	total := read + hash + comp
	b.ReportMetric(read.Seconds(), "read-CPU-s")
	b.ReportMetric(hash.Seconds(), "blake3-CPU-s")
	b.ReportMetric(comp.Seconds(), "zstd-CPU-s")
	b.ReportMetric(total.Seconds(), "floor-CPU-s")
	b.ReportMetric(float64(size)/1e6/(total.Seconds()/float64(runtime.GOMAXPROCS(0))), "floor-MB/s")
	b.Logf("zstd: %s", zstdenc.Implementation())
	b.Logf("%d MiB image: read %.2f + BLAKE3 %.2f + zstd %.2f (%d MiB in, %d MiB out) = %.2f CPU-s; on %d cores at best %.0f MB/s",
		size>>20, read.Seconds(), hash.Seconds(), comp.Seconds(), compressed>>20, stored>>20, total.Seconds(),
		runtime.GOMAXPROCS(0), float64(size)/1e6/(total.Seconds()/float64(runtime.GOMAXPROCS(0))))
}

// threadCPU is the calling thread's user+system CPU time.
func threadCPU() time.Duration {
	var ru syscall.Rusage
	const rusageThread = 1 // RUSAGE_THREAD
	if err := syscall.Getrusage(rusageThread, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

var zeroUnit = make([]byte, UnitSize)

func isZeroes(p []byte) bool { return bytes.Equal(p, zeroUnit[:len(p)]) }
