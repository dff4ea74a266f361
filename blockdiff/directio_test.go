package blockdiff

import (
	"bytes"
	"crypto/rand"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// directFile creates a file in a temporary folder and opens it for direct
// writes, skipping the test where the file system has no O_DIRECT.
func directFile(t *testing.T, size int64) (*os.File, *directWriter) {
	t.Helper()
	f, err := os.Create(filepath.Join(t.TempDir(), "out.img"))
	require.NoError(t, err)
	t.Cleanup(func() { f.Close() })
	require.NoError(t, f.Truncate(size))
	dw := openDirect(f)
	if dw == nil {
		t.Skipf("the file system of %s does not support O_DIRECT", f.Name())
	}
	t.Cleanup(func() { dw.Close() })
	return f, dw
}

func TestDirectWriterWritesEveryShape(t *testing.T) {
	const size = 3*directAlign*64 + 1000 // a tail of odd length
	f, dw := directFile(t, size)
	want := make([]byte, size)
	_, _ = rand.Read(want)

	aligned := dw.alignedBuf(directAlign * 64)
	copy(*aligned, want[:directAlign*64])
	misaligned := make([]byte, directAlign*64+1)[1:] // an uncompressed object decrypted in place
	copy(misaligned, want[directAlign*64:2*directAlign*64])

	for _, w := range []struct {
		p   []byte
		off int64
	}{
		{*aligned, 0},                                   // direct as it is
		{misaligned, directAlign * 64},                  // direct through an aligned copy
		{want[2*directAlign*64:], 2 * directAlign * 64}, // odd length: buffered
	} {
		n, err := dw.WriteAt(w.p, w.off)
		require.NoError(t, err)
		require.Equal(t, len(w.p), n)
	}
	require.EqualValues(t, 2, dw.nDirect.Load(), "the two aligned writes bypass the page cache")
	require.NoError(t, f.Sync())

	got, err := os.ReadFile(f.Name())
	require.NoError(t, err)
	require.True(t, bytes.Equal(want, got), "the file holds what was written")
}

func TestRestoreFileDirectOddSize(t *testing.T) {
	directFile(t, directAlign) // skips without O_DIRECT
	// Blocks of 64 KiB, compressible (decoded into aligned memory) and
	// random (stored raw, decrypted in place behind the header), a hole,
	// and a last block of odd length: the aligned blocks go direct, the
	// last through the page cache.
	r := newRepo(t, openStore(t, "file"), "pass")
	data := make([]byte, 5*testBS+777)
	copy(data, textBytes(1, testBS))
	copy(data[3*testBS:], randBytes(2, len(data)-3*testBS))
	v := backupBytes(t, r, "vol", data, BackupOptions{})
	require.True(t, bytes.Equal(data, restoreBytes(t, r, v.ID)), "restored bytes equal the backed-up bytes")
}
