package zfsrepl_test

import (
	"context"
	"errors"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/retention"
	"github.com/cairn-backup/cairn/zfsrepl"
	"github.com/cairn-backup/cairn/zfsrepl/internal/memzfs"
	"github.com/cairn-backup/cairn/zfsrepl/zfs"
)

// flakyReceiver is a receiver that can be made unreachable.
type flakyReceiver struct {
	zfsrepl.Receiver
	down bool
}

var errDown = errors.New("receiver unreachable")

func (f *flakyReceiver) ListVersions(ctx context.Context, fs string) ([]zfs.Version, error) {
	if f.down {
		return nil, errDown
	}
	return f.Receiver.ListVersions(ctx, fs)
}

func (f *flakyReceiver) ResumeToken(ctx context.Context, fs string) (string, error) {
	if f.down {
		return "", errDown
	}
	return f.Receiver.ResumeToken(ctx, fs)
}

func (f *flakyReceiver) Receive(ctx context.Context, req zfsrepl.ReceiveRequest, stream io.Reader) error {
	if f.down {
		return errDown
	}
	return f.Receiver.Receive(ctx, req, stream)
}

func (f *flakyReceiver) DestroySnapshots(ctx context.Context, fs string, snaps []zfs.Version) error {
	if f.down {
		return errDown
	}
	return f.Receiver.DestroySnapshots(ctx, fs, snaps)
}

func snapNames(vs []zfs.Version) []string {
	var s []string
	for _, v := range vs {
		if v.Type == zfs.Snapshot {
			s = append(s, v.Name)
		}
	}
	slices.Sort(s)
	return s
}

func items(vs []zfs.Version) []retention.Item {
	var its []retention.Item
	for _, v := range vs {
		if v.Type == zfs.Snapshot {
			its = append(its, retention.Item{Name: v.Name, Created: v.Creation})
		}
	}
	return its
}

func itemNames(its []retention.Item) []string {
	var s []string
	for _, it := range its {
		s = append(s, it.Name)
	}
	slices.Sort(s)
	return s
}

func seedRules(t *testing.T) (sender, receiver zfsrepl.KeepRules) {
	t.Helper()
	last, err := retention.LastN(10, "^zrepl_")
	if err != nil {
		t.Fatal(err)
	}
	grid, err := retention.ParseGrid("1x1h(keep=all) | 24x1h | 30x1d | 6x30d", "^zrepl_")
	if err != nil {
		t.Fatal(err)
	}
	return zfsrepl.KeepRules{Policies: []retention.Policy{last}, NotReplicated: true},
		zfsrepl.KeepRules{Policies: []retention.Policy{grid}}
}

// TestPrunePushSeed runs the seed's push job (snapshot, replicate, prune) for
// many cycles with faked snapshot times: every 10 minutes for a day and a
// half, then every 6 hours for 40 days. After each cycle the receiver holds
// exactly what the grid keeps of what it held, and the sender the 10 newest.
func TestPrunePushSeed(t *testing.T) {
	ctx := context.Background()
	src, dst := memzfs.New(1000), memzfs.New(5000)
	src.PayloadSize, dst.PayloadSize = 16, 16
	src.CreateFS("tank/garage/data")
	dst.CreateFS("wdc/zrepl/garage")
	f, err := zfsrepl.NewFilter(map[string]bool{"tank/garage/data": true})
	if err != nil {
		t.Fatal(err)
	}
	s := &memzfs.Sender{Pool: src, Job: "push", Filter: f}
	r := &memzfs.Receiver{Pool: dst, Root: "wdc/zrepl/garage", Job: "sink"}
	keepS, keepR := seedRules(t)
	grid := keepR.Policies[0]
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	const rfs = "wdc/zrepl/garage/tank/garage/data"
	cycle := func(i int) {
		name := "zrepl_" + now.Format("20060102_150405_000")
		src.SnapshotAt("tank/garage/data", name, now)
		if err := zfsrepl.Replicate(ctx, s, r, zfsrepl.Config{Job: "push"}).Err(); err != nil {
			t.Fatalf("cycle %d: %v", i, err)
		}
		want, _ := grid.Apply(now, items(dst.Versions(rfs)))
		reps, err := zfsrepl.PrunePush(ctx, s, r, keepS, keepR, zfsrepl.PruneOptions{Job: "push", Now: now})
		if err != nil {
			t.Fatalf("cycle %d: prune: %v", i, err)
		}
		if len(reps) != 2 {
			t.Fatalf("cycle %d: %d reports: %+v", i, len(reps), reps)
		}
		if got := snapNames(dst.Versions(rfs)); !slices.Equal(got, itemNames(want)) {
			t.Fatalf("cycle %d: receiver has\n%v\nthe grid keeps\n%v", i, got, itemNames(want))
		}
		if got := snapNames(src.Versions("tank/garage/data")); len(got) != min(i+1, 10) || got[len(got)-1] != name {
			t.Fatalf("cycle %d: sender has %v", i, got)
		}
	}
	i := 0
	for ; i < 6*36; i++ {
		cycle(i)
		now = now.Add(10 * time.Minute)
	}
	for end := i + 4*40; i < end; i++ {
		cycle(i)
		now = now.Add(6 * time.Hour)
	}
	got := snapNames(dst.Versions(rfs))
	// 1x1h keep=all holds the newest; 24x1h one per hour over a day of 6h
	// cycles (4); 30x1d one per day; the oldest from the 10-minute phase is
	// past the 30 days and kept by 6x30d.
	if len(got) < 30 || len(got) > 40 {
		t.Fatalf("receiver keeps %d snapshots after 40 days: %v", len(got), got)
	}
}

// TestPrunePushStalledReceiver: with the receiver unreachable for longer
// than the sender keeps snapshots (last_n 10 alone, no not_replicated), the
// sender keeps the cursor's snapshot and replication resumes incrementally.
func TestPrunePushStalledReceiver(t *testing.T) {
	ctx := context.Background()
	src, dst := memzfs.New(1000), memzfs.New(5000)
	src.PayloadSize = 16
	src.CreateFS("tank/garage/data")
	dst.CreateFS("wdc/zrepl/garage")
	f, _ := zfsrepl.NewFilter(map[string]bool{"tank/garage/data": true})
	s := &memzfs.Sender{Pool: src, Job: "push", Filter: f}
	r := &flakyReceiver{Receiver: &memzfs.Receiver{Pool: dst, Root: "wdc/zrepl/garage", Job: "sink"}}
	last, _ := retention.LastN(10, "")
	keepS := zfsrepl.KeepRules{Policies: []retention.Policy{last}}
	_, keepR := seedRules(t)
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var cursorSnap string
	for i := range 30 {
		name := "zrepl_" + now.Format("20060102_150405_000")
		src.SnapshotAt("tank/garage/data", name, now)
		r.down = i >= 3 && i < 25
		rep := zfsrepl.Replicate(ctx, s, r, zfsrepl.Config{Job: "push"})
		if r.down != (rep.Err() != nil) {
			t.Fatalf("cycle %d (receiver down %v): replicate: %v", i, r.down, rep.Err())
		}
		if i == 2 {
			cursorSnap = name
		}
		if !r.down {
			for _, fr := range rep.Filesystems {
				for _, st := range fr.Steps {
					if i > 0 && st.Kind != zfsrepl.StepIncremental {
						t.Fatalf("cycle %d: step %+v is not incremental", i, st)
					}
				}
			}
		}
		reps, err := zfsrepl.PrunePush(ctx, s, r, keepS, keepR, zfsrepl.PruneOptions{Job: "push", Now: now})
		if r.down {
			if err == nil {
				t.Fatalf("cycle %d: pruning with the receiver down did not report it", i)
			}
			if reps[0].Side != zfsrepl.SideSender || reps[0].Err() != nil {
				t.Fatalf("cycle %d: sender not pruned: %+v", i, reps[0])
			}
			got := snapNames(src.Versions("tank/garage/data"))
			if !slices.Contains(got, cursorSnap) {
				t.Fatalf("cycle %d: sender destroyed the cursor's snapshot %s: %v", i, cursorSnap, got)
			}
			if i >= 13 && len(got) != 11 {
				t.Fatalf("cycle %d: sender keeps %v, want 10 newest and the cursor's", i, got)
			}
		} else if err != nil {
			t.Fatalf("cycle %d: prune: %v", i, err)
		}
		now = now.Add(10 * time.Minute)
	}
	rv := snapNames(dst.Versions("wdc/zrepl/garage/tank/garage/data"))
	sv := snapNames(src.Versions("tank/garage/data"))
	if rv[len(rv)-1] != sv[len(sv)-1] {
		t.Fatalf("receiver did not catch up: sender %v, receiver %v", sv, rv)
	}
	if len(sv) != 10 || slices.Contains(sv, cursorSnap) {
		t.Fatalf("sender after catching up keeps %v, want the 10 newest", sv)
	}
}

// TestPruneSenderProtections: not_replicated keeps what is newer than the
// cursor, a held snapshot is never destroyed, and neither is the cursor's.
func TestPruneSenderProtections(t *testing.T) {
	ctx := context.Background()
	src, dst, s, r := setup(t, map[string]bool{"tank/garage/data": true})
	src.PayloadSize = 16
	for _, n := range []string{"a1", "a2", "a3"} {
		src.Snapshot("tank/garage/data", n)
	}
	if err := zfsrepl.Replicate(ctx, s, r, zfsrepl.Config{Job: "push"}).Err(); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"b1", "b2"} {
		src.Snapshot("tank/garage/data", n)
	}
	if err := zfsrepl.Replicate(ctx, s, r, zfsrepl.Config{Job: "push"}).Err(); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"c1", "c2"} {
		src.Snapshot("tank/garage/data", n)
	}
	// a1 is held by someone else.
	if err := s.HoldStep(ctx, "tank/garage/data", zfsrepl.Step{To: zfs.Version{Name: "a1"}}); err != nil {
		t.Fatal(err)
	}
	none, _ := retention.Regex("^nothing$", false)
	keepS := zfsrepl.KeepRules{Policies: []retention.Policy{none}, NotReplicated: true}
	reps, err := zfsrepl.PrunePush(ctx, s, r, keepS, zfsrepl.KeepRules{Policies: []retention.Policy{none}}, zfsrepl.PruneOptions{Job: "push"})
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(snapNames(src.Versions("tank/garage/data")), " "); got != "a1 b2 c1 c2" {
		t.Fatalf("sender keeps %q, want a1 (held) b2 (cursor) c1 c2 (not replicated); reports %+v", got, reps)
	}
	// The receiver keeps its newest (the incremental base) only.
	if got := strings.Join(snapNames(dst.Versions("wdc/zrepl/garage/tank/garage/data")), " "); got != "b2" {
		t.Fatalf("receiver keeps %q", got)
	}
	// Replication still continues incrementally.
	rep := zfsrepl.Replicate(ctx, s, r, zfsrepl.Config{Job: "push"})
	if err := rep.Err(); err != nil || len(rep.Filesystems[0].Steps) != 2 || rep.Filesystems[0].Steps[0].Kind != zfsrepl.StepIncremental {
		t.Fatalf("replication after pruning: %v %+v", err, rep.Filesystems)
	}
}

func TestPruneLocalDryRun(t *testing.T) {
	ctx := context.Background()
	src := memzfs.New(1)
	src.CreateFS("tank/a")
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := range 5 {
		src.SnapshotAt("tank/a", "zrepl_"+now.Add(time.Duration(i)*time.Hour).Format("20060102_150405_000"), now.Add(time.Duration(i)*time.Hour))
	}
	src.Snapshot("tank/a", "manual")
	f, _ := zfsrepl.NewFilter(map[string]bool{"tank/a": true})
	s := &memzfs.Sender{Pool: src, Job: "snap", Filter: f}
	last, _ := retention.LastN(2, "^zrepl_")
	manual, _ := retention.Regex("^zrepl_", true)
	keep := zfsrepl.KeepRules{Policies: []retention.Policy{last, manual}}
	reps, err := zfsrepl.PruneLocal(ctx, s, keep, zfsrepl.PruneOptions{Now: now, DryRun: true})
	if err != nil || len(reps) != 1 || len(reps[0].Destroyed) != 3 || len(src.Versions("tank/a")) != 6 {
		t.Fatalf("dry run: %v %+v", err, reps)
	}
	if _, err := zfsrepl.PruneLocal(ctx, s, keep, zfsrepl.PruneOptions{Now: now}); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(snapNames(src.Versions("tank/a")), " "); got != "manual zrepl_20260101_030000_000 zrepl_20260101_040000_000" {
		t.Fatalf("after pruning: %q", got)
	}
}
