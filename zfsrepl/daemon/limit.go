package daemon

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/cairn-backup/cairn/zfsrepl"
)

// limitedSender limits the bytes per second of its send streams, as zrepl's
// send.bandwidth_limit: a token bucket of burst bytes refilled at rate.
type limitedSender struct {
	Local
	rate, burst int64
	sleep       func(ctx context.Context, d time.Duration) error
}

// Send wraps the step's stream in the job's bandwidth limit.
func (l limitedSender) Send(ctx context.Context, fs string, st zfsrepl.Step) (io.ReadCloser, error) {
	rc, err := l.Local.Send(ctx, fs, st)
	if err != nil {
		return nil, err
	}
	return newLimitedReader(ctx, rc, l.rate, l.burst, time.Now, l.sleep), nil
}

type limitedReader struct {
	io.ReadCloser
	ctx         context.Context
	rate, burst int64
	tokens      float64
	last        time.Time
	now         func() time.Time
	sleep       func(ctx context.Context, d time.Duration) error
}

func newLimitedReader(ctx context.Context, rc io.ReadCloser, rate, burst int64, now func() time.Time, sleep func(context.Context, time.Duration) error) *limitedReader {
	return &limitedReader{ReadCloser: rc, ctx: ctx, rate: rate, burst: burst, tokens: float64(burst), last: now(), now: now, sleep: sleep}
}

// sleepCtx waits for d or until ctx is done.
func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

// Read reads at most a bucket, then waits until the bucket has paid for
// what was read.
func (r *limitedReader) Read(p []byte) (int, error) {
	if int64(len(p)) > r.burst {
		p = p[:r.burst]
	}
	n, err := r.ReadCloser.Read(p)
	if n == 0 {
		return n, err
	}
	now := r.now()
	r.tokens = min(r.tokens+max(now.Sub(r.last), 0).Seconds()*float64(r.rate), float64(r.burst)) - float64(n)
	r.last = now
	if r.tokens < 0 {
		d := time.Duration(-r.tokens / float64(r.rate) * float64(time.Second))
		if err := r.sleep(r.ctx, d); err != nil {
			return n, fmt.Errorf("send stream: %w", err)
		}
		// The wait paid the debt: the bucket is empty at now+d, whatever
		// the clock says (a sleep shorter than asked is not credited
		// twice; a longer one is credited at the next read).
		r.tokens, r.last = 0, now.Add(d)
	}
	return n, err
}
