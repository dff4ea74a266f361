package s3_test

import (
	"testing"

	"github.com/cairn-backup/cairn/internal/testenv"
	"github.com/cairn-backup/cairn/objstore"
	"github.com/cairn-backup/cairn/objstore/storetest"
)

// BenchmarkS3 measures Put and Get of 4 MiB objects on the test
// environment's S3 server, with the backend's default part size (so each
// object is one PutObject, as cairn's blocks are).
func BenchmarkS3(b *testing.B) {
	env := testenv.S3(b)
	bk := bucket(b, env)
	storetest.Benchmark(b, func(b *testing.B) objstore.Store {
		s, err := objstore.Open(b.Context(), storeURL(env, env.Endpoint, bk, "bench-"+randHex(4), "part_size", "16777216"))
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { s.Close() })
		return s
	})
}
