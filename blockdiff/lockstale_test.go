package blockdiff

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/objstore"
)

// TestExclusiveWaitSeesLockGoStale is issue 19, case 5: a cleanup waiting
// for a shared lock notices that it went stale at the next poll, not only at
// its own refresh every TTL/4 (it used to fail with --lock-wait 30s against
// a lock whose holder had died).
func TestExclusiveWaitSeesLockGoStale(t *testing.T) {
	for _, kind := range []string{"mem", "file", "s3"} {
		t.Run(kind, func(t *testing.T) {
			var s objstore.Store
			if kind == "s3" {
				s = s3Store(t)
			} else {
				s = openStore(t, kind)
			}
			ctx := context.Background()
			newRepo(t, s, "")
			// A dead backup's lock, live for 2 more seconds.
			dead := lockKey(LockShared, 2*time.Second)
			if err := s.Put(ctx, dead, bytes.NewReader([]byte("{}")), 2); err != nil {
				t.Fatal(err)
			}
			r := openRepo(t, s, Options{LockTTL: 15 * time.Minute, LockWait: 20 * time.Second})
			start := time.Now()
			res, err := r.Cleanup(ctx, CleanupOptions{})
			if err != nil {
				t.Fatalf("cleanup behind a lock that went stale: %v", err)
			}
			if d := time.Since(start); d > 8*time.Second {
				t.Fatalf("cleanup took %s to see the lock stale", d)
			}
			_ = res
		})
	}
}
