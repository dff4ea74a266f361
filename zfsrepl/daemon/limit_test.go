package daemon

import (
	"bytes"
	"context"
	"io"
	"testing"
	"time"
)

// TestLimitedReader reads 1 MiB through a 4 MiB/s limit with a 64 KiB
// bucket: the data is intact and the read cannot take less than the limit
// allows (a lower bound only: a loaded machine is slower, never faster).
func TestLimitedReader(t *testing.T) {
	data := bytes.Repeat([]byte("cairn-zrepl "), 1<<20/12+1)[:1<<20]
	r := &limitedReader{ReadCloser: io.NopCloser(bytes.NewReader(data)), ctx: context.Background(),
		rate: 4 << 20, burst: 64 << 10, tokens: 64 << 10, last: time.Now()}
	t0 := time.Now()
	got, err := io.ReadAll(r)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read %d bytes, %v", len(got), err)
	}
	// (1 MiB - the first bucket) at 4 MiB/s.
	if d := time.Since(t0); d < 230*time.Millisecond {
		t.Fatalf("1 MiB through a 4 MiB/s limit took %v", d)
	}
	// A cancelled context ends a waiting read.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	r = &limitedReader{ReadCloser: io.NopCloser(bytes.NewReader(data)), ctx: ctx, rate: 1, burst: 64 << 10, last: time.Now()}
	if _, err := io.ReadAll(r); err == nil {
		t.Fatal("a read past the limit with a cancelled context succeeded")
	}
}
