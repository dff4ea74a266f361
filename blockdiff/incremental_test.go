package blockdiff

import (
	"bytes"
	"context"
	"errors"
	"testing"
)

// changeBlocks returns a copy of img with the given blocks overwritten.
func changeBlocks(img []byte, blocks ...int) []byte {
	out := bytes.Clone(img)
	for _, b := range blocks {
		copy(out[b*testBS:], randBytes(uint64(1000+b), testBS))
	}
	return out
}

// hintsFor marks the given blocks as changed, as rbd diff would.
func hintsFor(blocks ...int) []Extent {
	h := []Extent{}
	for _, b := range blocks {
		h = append(h, Extent{Offset: int64(b) * testBS, Length: testBS, Exists: true})
	}
	return h
}

func TestIncrementalWithoutHints(t *testing.T) {
	s := openStore(t, "mem")
	r := newRepo(t, s, "")
	img := randBytes(1, 200*testBS)
	v1 := backupBytes(t, r, "vol", img, BackupOptions{})
	if v1.Stats.BlocksNew != 200 {
		t.Fatalf("first backup stored %d blocks, want 200", v1.Stats.BlocksNew)
	}
	img2 := changeBlocks(img, 5, 77, 199)
	v2 := backupBytes(t, r, "vol", img2, BackupOptions{Base: v1.ID})
	st := v2.Stats
	if st.BlocksNew != 3 || st.BlocksDeduped != 197 || st.BytesRead != int64(len(img)) {
		t.Fatalf("unhinted incremental: %+v, want 3 new, 197 deduplicated, all read", st)
	}
	if n := countPrefix(t, s, "data/"); n != 203 {
		t.Fatalf("%d data objects stored, want 203", n)
	}
	if !bytes.Equal(restoreBytes(t, r, v2.ID), img2) || !bytes.Equal(restoreBytes(t, r, v1.ID), img) {
		t.Fatal("restores differ")
	}
}

func TestIncrementalWithHints(t *testing.T) {
	s := openStore(t, "mem")
	r := newRepo(t, s, "")
	img := randBytes(2, 2000*testBS)
	copy(img[10*testBS:], make([]byte, testBS)) // block 10 sparse in the base
	v1 := backupBytes(t, r, "vol", img, BackupOptions{})
	img2 := changeBlocks(img, 3, 1500)
	copy(img2[20*testBS:], make([]byte, testBS)) // block 20 discarded
	hints := append(hintsFor(3, 1500), Extent{Offset: 20 * testBS, Length: testBS, Exists: false})
	v2 := backupBytes(t, r, "vol", img2, BackupOptions{Base: v1.ID, Hints: hints})
	st := v2.Stats
	// 1997 blocks outside the hints: sample max(min(1997,10), 1) = 10.
	if st.BlocksNew != 2 || st.BlocksVerified != 10 || st.BlocksFromBase != 1987 {
		t.Fatalf("hinted incremental: %+v, want 2 new, 10 verified, 1987 copied", st)
	}
	if st.BytesRead != 12*testBS {
		t.Fatalf("read %d bytes, want the 2 hinted and 10 verified blocks", st.BytesRead)
	}
	if st.BlocksSparse != 1 || st.BlocksNew+st.BlocksDeduped+st.BlocksSparse+st.BlocksFromBase+st.BlocksVerified != st.BlocksTotal {
		t.Fatalf("counts do not add up, or the discarded block is not the one sparse block: %+v", st)
	}
	if n := countPrefix(t, s, "data/"); n != 1999+2 {
		t.Fatalf("%d data objects, want 2001", n)
	}
	if !bytes.Equal(restoreBytes(t, r, v2.ID), img2) {
		t.Fatal("hinted restore differs")
	}
	// An empty (non-nil) hint list: nothing changed, only the sample is read.
	v3 := backupBytes(t, r, "vol", img2, BackupOptions{Base: v2.ID, Hints: []Extent{}})
	if v3.Stats.BlocksNew != 0 || v3.Stats.BlocksVerified != 10 || v3.Stats.BytesRead != 10*testBS {
		t.Fatalf("no-change hinted backup: %+v", v3.Stats)
	}
}

func TestWrongHintsCaught(t *testing.T) {
	r := newRepo(t, openStore(t, "mem"), "")
	img := randBytes(3, 50*testBS)
	v1 := backupBytes(t, r, "vol", img, BackupOptions{})
	img2 := changeBlocks(img, 7, 30) // 30 changed but not hinted
	_, err := r.Backup(context.Background(), NewSource(bytes.NewReader(img2), int64(len(img2))),
		BackupOptions{Volume: "vol", Base: v1.ID, Hints: hintsFor(7), VerifyPercent: 100})
	if !errors.Is(err, ErrHintMismatch) {
		t.Fatalf("wrong hints: err = %v, want ErrHintMismatch", err)
	}
	vs, err := r.List(context.Background(), Filter{Volume: "vol"})
	if err != nil {
		t.Fatal(err)
	}
	if len(vs) != 2 || vs[0].Status != StatusValid || vs[1].Status != StatusFailed || vs[1].Error == "" {
		t.Fatalf("after a failed backup: %d versions, statuses %v %v", len(vs), vs[0].Status, vs[len(vs)-1].Status)
	}
	if _, err := r.Version(context.Background(), vs[1].ID); err != nil {
		t.Fatal(err)
	}
	if err := r.Restore(context.Background(), vs[1].ID, nil, RestoreOptions{}); !errors.Is(err, ErrNotValid) {
		t.Fatalf("restore of the failed version: %v, want ErrNotValid", err)
	}
	// With the default sample (10 of the 49 blocks outside the hints), a
	// volume whose every unhinted block changed is caught every time.
	img3 := randBytes(33, len(img))
	_, err = r.Backup(context.Background(), NewSource(bytes.NewReader(img3), int64(len(img3))),
		BackupOptions{Volume: "vol", Base: v1.ID, Hints: hintsFor(7)})
	if !errors.Is(err, ErrHintMismatch) {
		t.Fatalf("default sample missed wrong hints: %v", err)
	}
}

func TestSampleSize(t *testing.T) {
	for _, c := range []struct {
		n    int
		pct  float64
		want int
	}{{0, 0, 0}, {5, 0, 5}, {10, 0, 10}, {9999, 0, 10}, {20000, 0, 20}, {100, 50, 50}, {100, 100, 100}, {3, 1, 3}} {
		plan := bytes.Repeat([]byte{actCopy}, c.n)
		sampleVerify(plan, c.pct)
		if got := bytes.Count(plan, []byte{actVerify}); got != c.want {
			t.Errorf("n=%d pct=%v: %d verified, want %d", c.n, c.pct, got, c.want)
		}
	}
}

func TestHintsNeedBase(t *testing.T) {
	r := newRepo(t, openStore(t, "mem"), "")
	_, err := r.Backup(context.Background(), NewSource(bytes.NewReader(nil), 0), BackupOptions{Volume: "v", Hints: []Extent{}})
	if err == nil {
		t.Fatal("hints without a base accepted")
	}
}

func TestParseRBDDiff(t *testing.T) {
	in := `[{"offset":0,"length":4194304,"exists":"true"},{"offset":8388608,"length":4096,"exists":"false"},{"offset":4194304,"length":1,"exists":true}]`
	got, err := ParseRBDDiff(bytes.NewReader([]byte(in)))
	if err != nil {
		t.Fatal(err)
	}
	want := []Extent{{0, 4194304, true}, {4194304, 1, true}, {8388608, 4096, false}}
	if len(got) != 3 || got[0] != want[0] || got[1] != want[1] || got[2] != want[2] {
		t.Fatalf("got %+v", got)
	}
	for _, bad := range []string{`{}`, `[{"offset":1}]`, `[{"offset":-1,"length":1,"exists":"true"}]`, `[{"offset":0,"length":1,"exists":"maybe"}]`, `nonsense`} {
		if _, err := ParseRBDDiff(bytes.NewReader([]byte(bad))); err == nil {
			t.Errorf("%s accepted", bad)
		}
	}
	empty, err := ParseRBDDiff(bytes.NewReader([]byte(`[]`)))
	if err != nil || empty == nil {
		t.Fatalf("empty diff: %v %v", empty, err)
	}
}
