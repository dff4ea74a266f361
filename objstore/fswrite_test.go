package objstore

import (
	"bytes"
	"context"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"testing/iotest"

	"github.com/stretchr/testify/require"

	"github.com/cairn-backup/cairn/internal/directio"
)

// TestFileWritesEverySize puts objects around the chunk size through the
// file backend, from whole and from dribbling readers, and reads back the
// same bytes; where the file system has O_DIRECT the whole chunks used it.
func TestFileWritesEverySize(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(context.Background(), "file://"+dir)
	require.NoError(t, err)
	defer s.Close()
	direct := hasDirectIO(dir)
	for _, size := range []int{0, 1, 4095, fsChunk - 1, fsChunk, fsChunk + 1, 3*fsChunk + 4097} {
		for _, dribble := range []bool{false, true} {
			data := make([]byte, size)
			rand.NewChaCha8([32]byte{byte(size), byte(size >> 8), byte(size >> 16)}).Read(data)
			var r io.Reader = bytes.NewReader(data)
			if dribble {
				r = iotest.HalfReader(r) // short reads: chunks are still whole
			}
			before := fsDirectChunks.Load()
			key := filepath.Join("data", "obj")
			require.NoError(t, s.Put(context.Background(), key, r, int64(size)))
			if direct {
				require.EqualValues(t, size/fsChunk, fsDirectChunks.Load()-before, "size %d: whole chunks go direct", size)
			}
			rc, err := s.Get(context.Background(), key, 0, -1)
			require.NoError(t, err)
			got, err := io.ReadAll(rc)
			rc.Close()
			require.NoError(t, err)
			require.True(t, bytes.Equal(data, got), "size %d dribble %v: the object holds what was put", size, dribble)
		}
	}
	if !direct {
		t.Logf("the file system of %s has no O_DIRECT: only the buffered path ran", dir)
	}
}

// hasDirectIO reports whether files in dir can be opened with O_DIRECT.
func hasDirectIO(dir string) bool {
	p := filepath.Join(dir, "probe")
	if err := os.WriteFile(p, nil, 0o600); err != nil {
		return false
	}
	defer os.Remove(p)
	f := directio.Open(p)
	if f == nil {
		return false
	}
	f.Close()
	return true
}
