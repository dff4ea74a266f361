package storetest

import (
	"bytes"
	"fmt"
	"io"
	"sync/atomic"
	"testing"

	"github.com/cairn-backup/cairn/objstore"
)

// BenchSize is the object size of the benchmarks: cairn's default block.
const BenchSize = 4 << 20

// Benchmark runs Put and Get of BenchSize objects against a store from
// newStore, one at a time and with several goroutines at once (as a backup's
// upload workers do), with b.SetBytes so that go test reports MB/s.
func Benchmark(b *testing.B, newStore func(b *testing.B) objstore.Store) {
	body := data(BenchSize, 42)
	put := func(b *testing.B, s objstore.Store, key string) {
		if err := s.Put(b.Context(), key, bytes.NewReader(body), BenchSize); err != nil {
			b.Fatal(err)
		}
	}
	get := func(b *testing.B, s objstore.Store, key string) {
		rc, err := s.Get(b.Context(), key, 0, -1)
		if err != nil {
			b.Fatal(err)
		}
		n, err := io.Copy(io.Discard, rc)
		rc.Close()
		if err != nil || n != BenchSize {
			b.Fatalf("Get(%q): %d bytes, %v", key, n, err)
		}
	}
	b.Run("Put", func(b *testing.B) {
		s := newStore(b)
		b.SetBytes(BenchSize)
		i := 0
		for b.Loop() {
			put(b, s, fmt.Sprintf("data/%02x/%d", i%256, i))
			i++
		}
	})
	b.Run("Get", func(b *testing.B) {
		s := newStore(b)
		for i := range 4 {
			put(b, s, fmt.Sprintf("get/%d", i))
		}
		b.SetBytes(BenchSize)
		i := 0
		for b.Loop() {
			get(b, s, fmt.Sprintf("get/%d", i%4))
			i++
		}
	})
	b.Run("PutParallel", func(b *testing.B) {
		s := newStore(b)
		b.SetBytes(BenchSize)
		b.SetParallelism(4)
		var n atomic.Int64
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				i := n.Add(1)
				put(b, s, fmt.Sprintf("data/%02x/%d", i%256, i))
			}
		})
	})
	b.Run("GetParallel", func(b *testing.B) {
		s := newStore(b)
		for i := range 8 {
			put(b, s, fmt.Sprintf("get/%d", i))
		}
		b.SetBytes(BenchSize)
		b.SetParallelism(4)
		var n atomic.Int64
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				get(b, s, fmt.Sprintf("get/%d", n.Add(1)%8))
			}
		})
	})
}
