package blockdiff

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"
)

// TestEnforceRemovesFailedBackups: an interrupted backup leaves a failed
// version; enforce keeps it for the grace period, then removes it, and never
// removes a version a scrub marked invalid or a protected failed one.
func TestEnforceRemovesFailedBackups(t *testing.T) {
	ctx := context.Background()
	r := newRepo(t, openStore(t, "mem"), "")
	img := randBytes(7, 3*4096)
	good := backupBytes(t, r, "vol", img, BackupOptions{})

	cctx, cancel := context.WithCancel(ctx)
	// the backup is interrupted while it reads, as by SIGTERM
	src := NewSource(cancelReader{bytes.NewReader(img), cancel}, int64(len(img)))
	_, err := r.Backup(cctx, src, BackupOptions{Volume: "vol"})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("interrupted backup: %v", err)
	}
	var failed string
	for id, st := range statuses(t, r) {
		if st == StatusFailed {
			failed = id
		}
	}
	if failed == "" {
		t.Fatalf("no failed version: %v", statuses(t, r))
	}
	scrubbed := backupBytes(t, r, "vol", img, BackupOptions{})
	protected := backupBytes(t, r, "vol", img, BackupOptions{})
	for id, st := range map[string]Status{scrubbed.ID: StatusInvalid, protected.ID: StatusFailed} {
		if _, err := r.update(ctx, id, func(v *Version) error {
			v.Status, v.Protected = st, id == protected.ID
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}

	res, err := r.Enforce(ctx, "latest1", EnforceOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if ids := decisionIDs(res.Volumes[0].Removed); len(ids) != 0 {
		t.Fatalf("removed %v within the grace period", ids)
	}
	res, err = r.Enforce(ctx, "latest1", EnforceOptions{Now: time.Now().Add(2 * time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	if ids := decisionIDs(res.Volumes[0].Removed); len(ids) != 1 || ids[0] != failed {
		t.Fatalf("removed %v, want only the failed %s", ids, failed)
	}
	left := statuses(t, r)
	for _, id := range []string{good.ID, scrubbed.ID, protected.ID} {
		if _, ok := left[id]; !ok {
			t.Errorf("%s was removed", id)
		}
	}
	if _, ok := left[failed]; ok {
		t.Error("the failed version is still there")
	}
}

// cancelReader cancels its context at the first read.
type cancelReader struct {
	r      *bytes.Reader
	cancel context.CancelFunc
}

func (c cancelReader) ReadAt(p []byte, off int64) (int, error) {
	c.cancel()
	return c.r.ReadAt(p, off)
}
