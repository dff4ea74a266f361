package blockdiff

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/objstore"
)

// cancellingSource cancels its backup after a number of reads.
type cancellingSource struct {
	Source
	after  int32
	reads  atomic.Int32
	cancel context.CancelFunc
}

func (c *cancellingSource) ReadAt(p []byte, off int64) (int, error) {
	if c.reads.Add(1) == c.after {
		c.cancel()
	}
	return c.Source.ReadAt(p, off)
}

// checkUsableAfterCrash checks the repository after an interrupted backup: no
// valid version of the volume, and a new backup that is valid and restores.
func checkUsableAfterCrash(t *testing.T, r *Repository, img []byte) {
	t.Helper()
	ctx := context.Background()
	vs, err := r.List(ctx, Filter{Volume: "vol"})
	if err != nil {
		t.Fatal(err)
	}
	if len(vs) != 1 || vs[0].Status == StatusValid {
		t.Fatalf("after the interrupted backup: %d versions, want 1 that is not valid", len(vs))
	}
	t.Logf("interrupted version %s is %s", vs[0].ID, vs[0].Status)
	v := backupBytes(t, r, "vol", img, BackupOptions{})
	if v.Status != StatusValid || !bytes.Equal(restoreBytes(t, r, v.ID), img) {
		t.Fatal("the backup after the interruption is not valid")
	}
}

func TestBackupCancelledMidway(t *testing.T) {
	r := newRepo(t, openStore(t, "mem"), "")
	img := randBytes(7, 100*testBS)
	ctx, cancel := context.WithCancel(context.Background())
	src := &cancellingSource{Source: NewSource(bytes.NewReader(img), int64(len(img))), after: 30, cancel: cancel}
	_, err := r.Backup(ctx, src, BackupOptions{Volume: "vol"})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled backup: %v", err)
	}
	checkUsableAfterCrash(t, r, img)
}

// slowSource makes a backup slow enough to be killed in the middle.
type slowSource struct{ Source }

func (s slowSource) ReadAt(p []byte, off int64) (int, error) {
	time.Sleep(20 * time.Millisecond)
	return s.Source.ReadAt(p, off)
}

// TestHelperBackupProcess is the child of TestBackupProcessKilled: a backup
// into the repository named by CAIRN_TEST_KILL_REPO that never finishes in time.
func TestHelperBackupProcess(t *testing.T) {
	url := os.Getenv("CAIRN_TEST_KILL_REPO")
	if url == "" {
		t.Skip("helper process for TestBackupProcessKilled")
	}
	ctx := context.Background()
	s, err := objstore.Open(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	r, err := Open(ctx, s, Options{Workers: 1, Transfers: 1})
	if err != nil {
		t.Fatal(err)
	}
	img := randBytes(8, 400*testBS)
	_, err = r.Backup(ctx, slowSource{NewSource(bytes.NewReader(img), int64(len(img)))}, BackupOptions{Volume: "vol"})
	t.Fatalf("the backup finished (%v) before it was killed", err)
}

func TestBackupProcessKilled(t *testing.T) {
	if !slices.Contains(objstore.Schemes(), "file") {
		t.Skip("objstore has no file:// backend in this tree")
	}
	url := "file://" + t.TempDir()
	s2, err := objstore.Open(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	newRepo(t, s2, "")
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperBackupProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), "CAIRN_TEST_KILL_REPO="+url)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for countPrefix(t, s2, "data/") < 20 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	t.Logf("killed the backup after %d data objects", countPrefix(t, s2, "data/"))
	r2, err := Open(context.Background(), s2, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer r2.Close()
	checkUsableAfterCrash(t, r2, randBytes(8, 400*testBS))
}
