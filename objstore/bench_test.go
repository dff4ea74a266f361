package objstore_test

import (
	"testing"

	"github.com/cairn-backup/cairn/objstore"
	"github.com/cairn-backup/cairn/objstore/storetest"
)

// BenchmarkFS measures Put and Get of 4 MiB objects on the file backend in
// a temporary directory (set TMPDIR to measure another file system). Put
// includes both fsyncs.
func BenchmarkFS(b *testing.B) {
	storetest.Benchmark(b, func(b *testing.B) objstore.Store {
		s, err := objstore.Open(b.Context(), "file://"+b.TempDir())
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { s.Close() })
		return s
	})
}

// BenchmarkMem measures the mem backend, the floor under the others.
func BenchmarkMem(b *testing.B) {
	storetest.Benchmark(b, func(b *testing.B) objstore.Store {
		s, err := objstore.Open(b.Context(), "mem://")
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { s.Close() })
		return s
	})
}
