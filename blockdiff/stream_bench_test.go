package blockdiff

import (
	"bytes"
	"context"
	"io"
	"syscall"
	"testing"
	"time"

	chunkers "github.com/PlakarKorp/go-cdc-chunkers"
)

// cpuTime is the CPU time (user + system) this process has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkChunker measures content-defined chunking alone with the default
// parameters, keyed (encrypted repositories) and not, as stream backups run
// it (the cutter: read into segments, cut in place), and the library's own
// fastcdc-v1.0.0 Chunker for reference. Besides MB/s it
// reports MB per CPU-second, the per-core figure that a loaded machine does
// not distort: run it with -cpu 1.
//
//	go test -run '^$' -bench Chunker -cpu 1 ./blockdiff/
func BenchmarkChunker(b *testing.B) {
	data := randBytes(9, 256<<20)
	for _, bc := range []struct {
		name string
		algo string
		key  []byte
	}{
		{"jc", ChunkerJC, nil},
		{"jc-keyed", ChunkerJC, bytes.Repeat([]byte{7}, 32)},
		{"fastcdc", ChunkerFastCDC, nil},
		{"fastcdc-keyed", ChunkerFastCDC, bytes.Repeat([]byte{7}, 32)},
		{"library-fastcdc-v1.0.0", "fastcdc-v1.0.0", nil},
	} {
		b.Run(bc.name, func(b *testing.B) {
			p := DefaultChunker
			buf := make([]byte, 2*p.Max)
			b.SetBytes(int64(len(data)))
			cpu0 := cpuTime()
			chunks := 0
			for b.Loop() {
				if _, ours := chunkerImpl[bc.algo]; ours {
					chunks += cutterChunks(b, bc.algo, bc.key, data)
				} else {
					chunks += libraryChunks(b, bc.algo, data, buf)
				}
			}
			cpu := (cpuTime() - cpu0).Seconds()
			b.ReportMetric(float64(b.N)*float64(len(data))/1e6/cpu, "MB/cpu-s")
			b.ReportMetric(float64(b.N)*float64(len(data))/float64(chunks), "B/chunk")
		})
	}
}

// BenchmarkBackupStream measures a whole stream backup (chunk, hash, zstd,
// store in memory) of 64 MiB of dump-like text into a fresh repository.
func BenchmarkBackupStream(b *testing.B) {
	data := dumpLike(10, 64<<20)
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		b.StopTimer()
		s := openStore(b, "mem")
		r, err := Init(context.Background(), s, InitConfig{}, Options{})
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		if _, err := r.BackupStream(context.Background(), bytes.NewReader(data), StreamOptions{Volume: "bench"}); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		r.Close()
		s.Close()
		b.StartTimer()
	}
}

// cutterChunks cuts data as a stream backup does and returns the chunk count.
func cutterChunks(b *testing.B, algo string, key, data []byte) int {
	p := DefaultChunker
	p.Algorithm = algo
	c, err := newCutter(p, key)
	if err != nil {
		b.Fatal(err)
	}
	n := 0
	err = c.run(context.Background(), bytes.NewReader(data), func(seg *segment, _ []byte) error {
		n++
		seg.release()
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	return n
}

// libraryChunks cuts data with go-cdc-chunkers' Chunker.
func libraryChunks(b *testing.B, impl string, data, buf []byte) int {
	p := DefaultChunker
	c, err := chunkers.NewChunkerBuffer(impl, bytes.NewReader(data),
		&chunkers.ChunkerOpts{MinSize: p.Min, NormalSize: p.Avg, MaxSize: p.Max}, buf)
	if err != nil {
		b.Fatal(err)
	}
	for n := 1; ; n++ {
		_, err := c.Next()
		if err == io.EOF {
			return n
		}
		if err != nil {
			b.Fatal(err)
		}
	}
}
