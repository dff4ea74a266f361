package blockdiff

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// loopDevice attaches a 1 MiB file to a loop device, or skips the test
// where that is not possible (no root, no losetup, no loop support).
func loopDevice(t *testing.T) string {
	t.Helper()
	losetup, err := exec.LookPath("losetup")
	if err != nil || os.Geteuid() != 0 {
		t.Skip("needs root and losetup for a loop device")
	}
	backing := filepath.Join(t.TempDir(), "disk")
	if err := os.WriteFile(backing, make([]byte, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(losetup, "-f", "--show", backing).Output()
	if err != nil {
		t.Skipf("losetup: %v", err)
	}
	dev := strings.TrimSpace(string(out))
	t.Cleanup(func() { _ = exec.Command(losetup, "-d", dev).Run() })
	return dev
}

// TestFailedRestoreToDeviceSaysPartial is issue 19, case 4 for devices: a
// device restored in place that failed is named in the error as holding
// partial data; a good restore writes the exact bytes.
func TestFailedRestoreToDeviceSaysPartial(t *testing.T) {
	dev := loopDevice(t)
	ctx := context.Background()
	s := openStore(t, "file")
	r := newRepo(t, s, "")
	pool := blockPool(8, 8)
	good := backupBytes(t, r, "vol", blocksImage(pool, 0, 1, 2, 3), BackupOptions{})
	bad := backupBytes(t, r, "vol", blocksImage(pool, 4, 5, 6, 7), BackupOptions{})
	damageObject(t, s, dataKey(bad.refs[2].ID))

	err := r.RestoreFile(ctx, bad.ID, dev, RestoreFileOptions{Overwrite: true})
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), dev) || !strings.Contains(err.Error(), "partial data") {
		t.Fatalf("failed restore to %s: %v", dev, err)
	}
	if err := r.RestoreFile(ctx, good.ID, dev, RestoreFileOptions{Overwrite: true}); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 4*testBS)
	f, err := os.Open(dev)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, blocksImage(pool, 0, 1, 2, 3)) {
		t.Fatal("restore to a device: wrong bytes")
	}
}
