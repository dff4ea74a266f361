package blockdiff

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestOpenFileSourceRefusesNonVolumes is issue 19, case 2: a directory (it
// panicked: size 2^63-1), a FIFO (open blocked forever), a character device
// (/dev/zero gave a valid 0-byte version) and a socket are refused at once,
// with the path and its type in the error; regular files are accepted.
func TestOpenFileSourceRefusesNonVolumes(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	cases := map[string]string{
		dir:         "directory",
		fifo:        "FIFO",
		"/dev/zero": "character device",
		sock:        "socket",
	}
	for path, kind := range cases {
		done := make(chan error, 1)
		go func() {
			src, err := OpenFileSource("file://" + path)
			if err == nil {
				src.Close()
			}
			done <- err
		}()
		select {
		case err := <-done:
			if !errors.Is(err, ErrNotVolume) || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), kind) {
				t.Errorf("%s: %v", path, err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("OpenFileSource(%s) hangs", path)
		}
	}
	// A regular file, through a symbolic link too.
	img := writeFile(t, randBytes(1, 3*testBS))
	link := filepath.Join(dir, "link")
	if err := os.Symlink(img, link); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{img, link} {
		src, err := OpenFileSource(p)
		if err != nil {
			t.Fatal(err)
		}
		if src.Size() != 3*testBS {
			t.Fatalf("%s: size %d", p, src.Size())
		}
		src.Close()
	}
}

// TestOpenFileSourceBlockDevice accepts a block device when the host has a
// readable one.
func TestOpenFileSourceBlockDevice(t *testing.T) {
	for _, p := range []string{"/dev/loop0", "/dev/sda", "/dev/vda", "/dev/nvme0n1"} {
		st, err := os.Stat(p)
		if err != nil || st.Mode()&os.ModeDevice == 0 || st.Mode()&os.ModeCharDevice != 0 {
			continue
		}
		src, err := OpenFileSource(p)
		if errors.Is(err, os.ErrPermission) {
			continue
		}
		if errors.Is(err, ErrNotVolume) {
			t.Fatalf("block device %s refused: %v", p, err)
		}
		if err == nil {
			src.Close()
		}
		return
	}
	t.Skip("no readable block device on this host")
}

// TestBackupRefusesAbsurdSize: a Source whose size is not a volume's fails
// before any version exists (it panicked in makeslice).
func TestBackupRefusesAbsurdSize(t *testing.T) {
	s := openStore(t, "mem")
	r := newRepo(t, s, "")
	_, err := r.Backup(t.Context(), NewSource(strings.NewReader(""), 1<<63-1), BackupOptions{Volume: "v"})
	if err == nil || !strings.Contains(err.Error(), "9223372036854775807") {
		t.Fatalf("size 2^63-1: %v", err)
	}
	if n := countPrefix(t, s, "versions/"); n != 0 {
		t.Fatalf("%d versions exist", n)
	}
}
