package zfsrepl_test

import (
	"context"
	"errors"
	"io"
	"slices"
	"strings"
	"testing"

	"github.com/cairn-backup/cairn/zfsrepl"
	"github.com/cairn-backup/cairn/zfsrepl/internal/memzfs"
	"github.com/cairn-backup/cairn/zfsrepl/zfs"
)

func setup(t *testing.T, filter map[string]bool) (*memzfs.Pool, *memzfs.Pool, *memzfs.Sender, *memzfs.Receiver) {
	t.Helper()
	src, dst := memzfs.New(1000), memzfs.New(5000)
	src.CreateFS("tank/garage/data")
	src.CreateFS("tank/garage/data/child")
	src.CreateFS("tank/other")
	dst.CreateFS("wdc/zrepl/garage")
	f, err := zfsrepl.NewFilter(filter)
	if err != nil {
		t.Fatal(err)
	}
	return src, dst, &memzfs.Sender{Pool: src, Job: "push", Filter: f},
		&memzfs.Receiver{Pool: dst, Root: "wdc/zrepl/garage", Job: "sink"}
}

func names(vs []zfs.Version) string {
	var s []string
	for _, v := range vs {
		s = append(s, v.RelName())
	}
	return strings.Join(s, " ")
}

func TestReplicateFullThenIncremental(t *testing.T) {
	ctx := context.Background()
	src, dst, s, r := setup(t, map[string]bool{"tank/garage<": true})
	for _, fs := range []string{"tank/garage", "tank/garage/data", "tank/garage/data/child"} {
		src.Snapshot(fs, "s1")
		src.Snapshot(fs, "s2")
	}
	rep := zfsrepl.Replicate(ctx, s, r, zfsrepl.Config{Job: "push"})
	if err := rep.Err(); err != nil {
		t.Fatal(err)
	}
	if len(rep.Filesystems) != 3 {
		t.Fatalf("report has %d filesystems: %+v", len(rep.Filesystems), rep.Filesystems)
	}
	if got := names(dst.Versions("wdc/zrepl/garage/tank/garage/data")); got != "@s2" {
		t.Fatalf("receiver has %q after initial most_recent", got)
	}
	if got := names(src.Versions("tank/garage/data")); !strings.Contains(got, "#"+zfsrepl.CursorName(src.Versions("tank/garage/data")[1].GUID, "push")) {
		t.Fatalf("no cursor on sender: %q", got)
	}
	for _, fs := range []string{"tank/garage", "tank/garage/data", "tank/garage/data/child"} {
		src.Snapshot(fs, "s3")
		src.Snapshot(fs, "s4")
	}
	rep = zfsrepl.Replicate(ctx, s, r, zfsrepl.Config{Job: "push"})
	if err := rep.Err(); err != nil {
		t.Fatal(err)
	}
	for _, fr := range rep.Filesystems {
		if fr.State != zfsrepl.StateDone || len(fr.Steps) != 2 || fr.Steps[0].Kind != zfsrepl.StepIncremental {
			t.Fatalf("%s: %+v", fr.Filesystem, fr)
		}
	}
	if got := names(dst.Versions("wdc/zrepl/garage/tank/garage/data/child")); got != "@s2 @s3 @s4" {
		t.Fatalf("receiver has %q", got)
	}
	// Exactly one cursor per filesystem, on s4; no step holds left; the
	// last-received hold is on the receiver's newest snapshot only.
	vs := src.Versions("tank/garage/data")
	var cursors []string
	for _, v := range vs {
		if v.Type == zfs.Bookmark && zfsrepl.IsCursor(v.Name, "push") {
			cursors = append(cursors, v.Name)
		}
		if v.Type == zfs.Snapshot && len(src.Holds(v.FullName())) > 0 {
			t.Fatalf("hold left on %s: %v", v.FullName(), src.Holds(v.FullName()))
		}
	}
	s4 := vs[slices.IndexFunc(vs, func(v zfs.Version) bool { return v.Name == "s4" })]
	if len(cursors) != 1 || cursors[0] != zfsrepl.CursorName(s4.GUID, "push") {
		t.Fatalf("cursors %v", cursors)
	}
	for _, v := range dst.Versions("wdc/zrepl/garage/tank/garage/data") {
		h := dst.Holds(v.FullName())
		if (v.Name == "s4") != (len(h) == 1) {
			t.Fatalf("%s holds %v", v.FullName(), h)
		}
	}
	// A third round has nothing to do.
	rep = zfsrepl.Replicate(ctx, s, r, zfsrepl.Config{Job: "push"})
	for _, fr := range rep.Filesystems {
		if fr.State != zfsrepl.StateUpToDate {
			t.Fatalf("%s: %+v", fr.Filesystem, fr)
		}
	}
}

func TestReplicateFromBookmark(t *testing.T) {
	ctx := context.Background()
	src, dst, s, r := setup(t, map[string]bool{"tank/garage": true})
	src.Snapshot("tank/garage", "s1")
	if err := zfsrepl.Replicate(ctx, s, r, zfsrepl.Config{Job: "push"}).Err(); err != nil {
		t.Fatal(err)
	}
	if err := src.Destroy("tank/garage@s1"); err != nil {
		t.Fatal(err)
	}
	src.Snapshot("tank/garage", "s2")
	rep := zfsrepl.Replicate(ctx, s, r, zfsrepl.Config{Job: "push"})
	if err := rep.Err(); err != nil {
		t.Fatal(err)
	}
	fr := rep.Filesystems[0]
	if fr.Steps[0].Kind != zfsrepl.StepIncremental || !strings.HasPrefix(fr.Steps[0].From, "#zrepl_CURSOR_G_") {
		t.Fatalf("%+v", fr.Steps)
	}
	if got := names(dst.Versions("wdc/zrepl/garage/tank/garage")); got != "@s1 @s2" {
		t.Fatalf("receiver has %q", got)
	}
}

func TestReplicateDivergedUntouched(t *testing.T) {
	ctx := context.Background()
	src, dst, s, r := setup(t, map[string]bool{"tank/garage": true})
	src.Snapshot("tank/garage", "s1")
	if err := zfsrepl.Replicate(ctx, s, r, zfsrepl.Config{Job: "push"}).Err(); err != nil {
		t.Fatal(err)
	}
	dst.Snapshot("wdc/zrepl/garage/tank/garage", "local")
	src.Snapshot("tank/garage", "s2")
	before := names(dst.Versions("wdc/zrepl/garage/tank/garage"))
	nlog := len(dst.Log)
	rep := zfsrepl.Replicate(ctx, s, r, zfsrepl.Config{Job: "push"})
	fr := rep.Filesystems[0]
	if fr.State != zfsrepl.StateConflict || fr.Conflict != zfsrepl.ConflictDiverged || !errors.Is(rep.Err(), zfsrepl.ErrConflict) {
		t.Fatalf("%+v", fr)
	}
	if after := names(dst.Versions("wdc/zrepl/garage/tank/garage")); after != before || len(dst.Log) != nlog {
		t.Fatalf("receiver changed: %q -> %q, log %v", before, after, dst.Log[nlog:])
	}
}

// cutReceiver passes at most limit bytes of the first stream to the real
// receiver, as a connection cut midway would.
type cutReceiver struct {
	zfsrepl.Receiver
	limit int64
	cut   bool
}

func (c *cutReceiver) Receive(ctx context.Context, req zfsrepl.ReceiveRequest, stream io.Reader) error {
	if c.cut {
		return c.Receiver.Receive(ctx, req, stream)
	}
	c.cut = true
	return c.Receiver.Receive(ctx, req, &failAfter{r: stream, n: c.limit})
}

type failAfter struct {
	r io.Reader
	n int64
}

func (f *failAfter) Read(p []byte) (int, error) {
	if f.n <= 0 {
		return 0, errors.New("connection reset")
	}
	if int64(len(p)) > f.n {
		p = p[:f.n]
	}
	n, err := f.r.Read(p)
	f.n -= int64(n)
	return n, err
}

func TestReplicateResume(t *testing.T) {
	ctx := context.Background()
	src, dst, s, r := setup(t, map[string]bool{"tank/garage": true})
	src.PayloadSize = 1 << 20
	src.Snapshot("tank/garage", "s1")
	src.Snapshot("tank/garage", "s2")
	cr := &cutReceiver{Receiver: r, limit: 300 << 10}
	rep := zfsrepl.Replicate(ctx, s, cr, zfsrepl.Config{Job: "push"})
	if rep.Err() == nil || rep.Filesystems[0].State != zfsrepl.StateFailed {
		t.Fatalf("cut transfer did not fail: %+v", rep.Filesystems)
	}
	if tok, _ := r.ResumeToken(ctx, "tank/garage"); tok == "" {
		t.Fatal("no resume token after the cut")
	}
	rep = zfsrepl.Replicate(ctx, s, cr, zfsrepl.Config{Job: "push"})
	if err := rep.Err(); err != nil {
		t.Fatal(err)
	}
	fr := rep.Filesystems[0]
	if fr.Steps[0].Kind != zfsrepl.StepResume || fr.Bytes > 800<<10 {
		t.Fatalf("not resumed, or resent everything: %+v", fr)
	}
	if got := names(dst.Versions("wdc/zrepl/garage/tank/garage")); got != "@s2" {
		t.Fatalf("receiver has %q", got)
	}
}

func TestFilter(t *testing.T) {
	f, err := zfsrepl.NewFilter(map[string]bool{"tank/garage<": true, "tank/garage/tmp<": false, "tank/garage/tmp/keep": true, "tank/x": true})
	if err != nil {
		t.Fatal(err)
	}
	for fs, want := range map[string]bool{"tank/garage": true, "tank/garage/data": true, "tank/garage/tmp": false,
		"tank/garage/tmp/a": false, "tank/garage/tmp/keep": true, "tank/x": true, "tank/x/y": false, "tank": false, "tank/garagex": false} {
		if f.Match(fs) != want {
			t.Errorf("Match(%q) = %v", fs, !want)
		}
	}
	if _, err := zfsrepl.NewFilter(map[string]bool{"../x<": true}); err == nil {
		t.Fatal("bad filter accepted")
	}
}

// TestReplicateResumeReleasesKilledHolds: a process killed in the middle of
// an incremental step leaves the step's holds on both its snapshots; the run
// that resumes the step releases both, so that pruning can destroy them.
func TestReplicateResumeReleasesKilledHolds(t *testing.T) {
	ctx := context.Background()
	src, _, s, r := setup(t, map[string]bool{"tank/garage": true})
	src.PayloadSize = 1 << 20
	s1 := src.Snapshot("tank/garage", "s1")
	if err := zfsrepl.Replicate(ctx, s, r, zfsrepl.Config{Job: "push"}).Err(); err != nil {
		t.Fatal(err)
	}
	s2 := src.Snapshot("tank/garage", "s2")
	if zfsrepl.Replicate(ctx, s, &cutReceiver{Receiver: r, limit: 300 << 10}, zfsrepl.Config{Job: "push"}).Err() == nil {
		t.Fatal("cut transfer did not fail")
	}
	// What the killed process held and never released.
	if err := s.HoldStep(ctx, "tank/garage", zfsrepl.Step{Kind: zfsrepl.StepIncremental, From: &s1, To: s2}); err != nil {
		t.Fatal(err)
	}
	rep := zfsrepl.Replicate(ctx, s, r, zfsrepl.Config{Job: "push"})
	if err := rep.Err(); err != nil || rep.Filesystems[0].Steps[0].Kind != zfsrepl.StepResume || rep.Filesystems[0].Steps[0].From != "@s1" {
		t.Fatalf("%v %+v", err, rep.Filesystems)
	}
	for _, sn := range []string{"tank/garage@s1", "tank/garage@s2"} {
		if h := src.Holds(sn); len(h) != 0 {
			t.Errorf("%s still held: %v", sn, h)
		}
	}
}
