package daemon

import (
	"bytes"
	"context"
	"errors"
	"io"
	"testing"
	"time"
)

// TestLimitedReader reads 1 MiB through a 4 MiB/s limit with a 64 KiB
// bucket on a fake clock that only sleeping moves: the data is intact, no
// read exceeds the bucket, and the reader sleeps for what the bytes past
// the first bucket cost at the rate, 234 ms.
func TestLimitedReader(t *testing.T) {
	data := bytes.Repeat([]byte("cairn-zrepl "), 1<<20/12+1)[:1<<20]
	clock := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var slept time.Duration
	sleep := func(_ context.Context, d time.Duration) error { slept += d; clock = clock.Add(d); return nil }
	src := &maxRead{r: bytes.NewReader(data)}
	r := newLimitedReader(context.Background(), io.NopCloser(src), 4<<20, 64<<10, func() time.Time { return clock }, sleep)
	got, err := io.ReadAll(r)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read %d bytes, %v", len(got), err)
	}
	if src.max > 64<<10 {
		t.Fatalf("a read of %d bytes, more than the bucket", src.max)
	}
	if want := 234375 * time.Microsecond; slept < want-time.Millisecond || slept > want+time.Millisecond { // 960 KiB at 4096 KiB/s
		t.Fatalf("slept %v for 1 MiB at 4 MiB/s after a 64 KiB bucket, want %v", slept, want)
	}
	// A cancelled context ends a waiting read with its cause.
	ctx, cancel := context.WithCancelCause(context.Background())
	cancel(ErrReset)
	r = newLimitedReader(ctx, io.NopCloser(bytes.NewReader(data)), 1, 64<<10, time.Now, sleepCtx)
	if _, err := io.ReadAll(r); !errors.Is(err, ErrReset) {
		t.Fatalf("a read past the limit with a cancelled context: %v", err)
	}
}

// maxRead records the largest read.
type maxRead struct {
	r   io.Reader
	max int
}

func (m *maxRead) Read(p []byte) (int, error) {
	m.max = max(m.max, len(p))
	return m.r.Read(p)
}
