package blockdiff

import (
	"bytes"
	"context"
	"slices"
	"testing"
	"time"
)

// TestMaintenanceS3 runs locking, cleanup, compaction and both scrubs
// against the real S3 server (radosgw: no conditional writes are used).
func TestMaintenanceS3(t *testing.T) {
	ctx := context.Background()
	s := s3Store(t)
	newRepo(t, s, "pw")
	r := openRepo(t, s, Options{Passphrase: []byte("pw"), LockTTL: 30 * time.Second, LockWait: 20 * time.Second})
	pool := blockPool(4, 6)
	v1 := backupBytes(t, r, "vol", blocksImage(pool, 0, 1, 2), BackupOptions{})
	v2 := backupBytes(t, r, "vol", blocksImage(pool, 2, 3), BackupOptions{})
	v3 := backupBytes(t, r, "vol", blocksImage(pool, 3, 4, 5), BackupOptions{})
	if err := r.Remove(ctx, v1.ID, RemoveOptions{}); err != nil {
		t.Fatal(err)
	}
	// Within the default grace nothing goes; with none, v1's own blocks do.
	res, err := r.Cleanup(ctx, CleanupOptions{})
	if err != nil || res.Deleted != 0 || res.Young != 2 {
		t.Fatalf("cleanup within the grace: %+v %v", res, err)
	}
	res, err = r.Cleanup(ctx, CleanupOptions{Grace: -1})
	if err != nil || res.Deleted != 2 || res.SegmentsAfter != 1 || res.IndexEntries != 4 {
		t.Fatalf("cleanup: %+v %v", res, err)
	}
	if n := countPrefix(t, s, "locks/"); n != 0 {
		t.Fatalf("%d locks left", n)
	}
	if rep := scrub(t, r, true); !rep.OK() || rep.ObjectsChecked != 4 {
		t.Fatalf("deep scrub: %+v", rep)
	}
	// A deleted object: the light scrub marks the two versions sharing it.
	if err := s.Delete(ctx, dataKey(v2.refs[1].ID)); err != nil {
		t.Fatal(err)
	}
	rep := scrub(t, r, false)
	if !sameSet(rep.Marked, []string{v2.ID, v3.ID}) || !rep.IndexRepaired {
		t.Fatalf("light scrub: %+v", rep)
	}
	// Backing up the block again heals the repository.
	v4 := backupBytes(t, r, "vol", blocksImage(pool, 3), BackupOptions{})
	if v4.Stats.BlocksNew != 1 {
		t.Fatalf("re-backup: %+v", v4.Stats)
	}
	if !bytes.Equal(restoreBytes(t, r, v4.ID), pool[3]) {
		t.Fatal("restore differs")
	}
	vs, _ := r.List(ctx, Filter{})
	var valid []string
	for _, v := range vs {
		if v.Status == StatusValid {
			valid = append(valid, v.ID)
		}
	}
	if !slices.Equal(valid, []string{v4.ID}) {
		t.Fatalf("valid versions %v", valid)
	}
}
