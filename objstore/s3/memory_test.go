package s3_test

import (
	"io"
	"runtime"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/internal/testenv"
	"github.com/cairn-backup/cairn/objstore"
)

// zeros is a reader of n zero bytes that hides its size.
type zeros struct{ n int64 }

func (z *zeros) Read(p []byte) (int, error) {
	if z.n <= 0 {
		return 0, io.EOF
	}
	k := min(int64(len(p)), z.n)
	clear(p[:k])
	z.n -= k
	return int(k), nil
}

// TestMultipartMemoryBounded streams a 100 MiB object of unknown size with
// 5 MiB parts, two in flight, and checks that the heap never holds much more
// than the concurrency+1 part buffers: the object is never buffered whole.
func TestMultipartMemoryBounded(t *testing.T) {
	env := testenv.S3(t)
	s, err := objstore.Open(t.Context(), storeURL(env, env.Endpoint, bucket(t, env), "mem", "concurrency", "2"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	const size = 100 << 20
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	done := make(chan struct{})
	peak := make(chan uint64)
	go func() {
		var m runtime.MemStats
		var hi uint64
		for {
			runtime.ReadMemStats(&m)
			hi = max(hi, m.HeapInuse)
			select {
			case <-done:
				peak <- hi
				return
			case <-time.After(time.Millisecond):
			}
		}
	}()
	err = s.Put(t.Context(), "streamed", &zeros{size}, -1)
	close(done)
	p := <-peak
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Stat(t.Context(), "streamed")
	if err != nil || info.Size != size {
		t.Fatalf("Stat = %+v, %v", info, err)
	}
	grew := int64(p) - int64(before.HeapInuse)
	t.Logf("heap in use grew by at most %d MiB while streaming %d MiB", grew>>20, size>>20)
	if grew > 40<<20 { // 3 parts of 5 MiB, plus the SDK's and GC's slack
		t.Errorf("heap grew by %d MiB streaming %d MiB: the upload is not bounded", grew>>20, size>>20)
	}
}
