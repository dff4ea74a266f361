package blockdiff

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"testing"
)

// TestListDataS3: the parallel listing of data/ over its 256 prefixes, on
// the real S3 server, yields what one List does, in order, spilled or not,
// and a cleanup whose marks and listing spill decides as one in memory.
func TestListDataS3(t *testing.T) {
	smallRuns(t, 50, 4, 7)
	ctx := context.Background()
	s := s3Store(t)
	r := newRepo(t, s, "")
	for i := range 600 {
		id := r.codec.hash([]byte(fmt.Sprint(i)))
		putObject(t, s, dataKey(id), bytes.Repeat([]byte{2}, i%13+1))
	}
	putObject(t, s, "data/zz/foreign", []byte("x"))
	putObject(t, s, "data/0a/notanid", []byte("x"))
	var want []dataObj
	for info, err := range s.List(ctx, "data/") {
		if err != nil {
			t.Fatal(err)
		}
		if id, ok := parseDataKey(info.Key); ok {
			want = append(want, dataObj{id: id, size: info.Size, mod: info.ModTime.UnixNano()})
		}
	}
	l, err := r.listData(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer l.close()
	var got []dataObj
	for {
		o, ok, err := l.next()
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			break
		}
		got = append(got, o)
	}
	if len(want) != 600 || !slices.Equal(got, want) {
		t.Fatalf("listed %d objects, one List %d (of 600)", len(got), len(want))
	}

	pool := blockPool(11, 12)
	var vs []*Version
	for i := range 4 {
		vs = append(vs, backupBytes(t, r, "vol", blocksImage(pool, i, i+3, i+6), BackupOptions{}))
	}
	if err := r.Remove(ctx, vs[0].ID, RemoveOptions{}); err != nil {
		t.Fatal(err)
	}
	res, err := r.Cleanup(ctx, CleanupOptions{Grace: -1, TempDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	// The 600 placeholders and the block only vs[0] held go.
	if res.Deleted != 601 || res.Referenced != 9 || res.Missing != 0 {
		t.Fatalf("cleanup: %+v", res)
	}
	for _, v := range vs[1:] {
		restoreBytes(t, r, v.ID)
	}
}
