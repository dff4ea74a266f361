package zfsrepl

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/cairn-backup/cairn/zfsrepl/zfs"
)

// snap and bm build in-memory versions: the GUID is derived from the name so
// that a received snapshot has the same GUID as the sent one.
func snap(fs, name string, txg uint64) zfs.Version {
	return zfs.Version{Type: zfs.Snapshot, Filesystem: fs, Name: name, GUID: guidOf(name), CreateTXG: txg}
}

func bm(fs, name, of string, txg uint64) zfs.Version {
	return zfs.Version{Type: zfs.Bookmark, Filesystem: fs, Name: name, GUID: guidOf(of), CreateTXG: txg}
}

func guidOf(name string) uint64 {
	var h uint64 = 1469598103934665603
	for _, c := range []byte(name) {
		h = (h ^ uint64(c)) * 1099511628211
	}
	return h
}

func describe(steps []Step) string {
	var s []string
	for _, st := range steps {
		s = append(s, st.String())
	}
	return strings.Join(s, "; ")
}

func TestPlan(t *testing.T) {
	const fs = "pool/a"
	s1, s2, s3, s4 := snap(fs, "s1", 10), snap(fs, "s2", 20), snap(fs, "s3", 30), snap(fs, "s4", 40)
	r := func(v zfs.Version) zfs.Version { v.Filesystem = "sink/c/pool/a"; v.CreateTXG += 1000; return v }
	cases := []struct {
		name     string
		in       PlanInput
		cfg      PlanConfig
		want     string
		conflict ConflictKind
	}{
		{name: "initial most recent", in: PlanInput{Sender: []zfs.Version{s3, s1, s2}},
			want: "full pool/a@s3"},
		{name: "initial all", in: PlanInput{Sender: []zfs.Version{s1, s2, s3}}, cfg: PlanConfig{Initial: InitialAll},
			want: "full pool/a@s1; incremental pool/a@s1 -> @s2; incremental pool/a@s2 -> @s3"},
		{name: "initial fail", in: PlanInput{Sender: []zfs.Version{s1}}, cfg: PlanConfig{Initial: InitialFail},
			conflict: ConflictInitialFail},
		{name: "incremental stepwise", in: PlanInput{Sender: []zfs.Version{s1, s2, s3, s4}, Receiver: []zfs.Version{r(s1), r(s2)}},
			want: "incremental pool/a@s2 -> @s3; incremental pool/a@s3 -> @s4"},
		{name: "up to date", in: PlanInput{Sender: []zfs.Version{s1, s2}, Receiver: []zfs.Version{r(s1), r(s2)}},
			want: ""},
		{name: "from bookmark after snapshot destroyed",
			in:   PlanInput{Sender: []zfs.Version{s1, bm(fs, "zrepl_CURSOR_G_x_J_push", "s2", 20), s3}, Receiver: []zfs.Version{r(s1), r(s2)}},
			want: "incremental pool/a#zrepl_CURSOR_G_x_J_push -> @s3"},
		{name: "snapshot preferred over bookmark of same guid",
			in:   PlanInput{Sender: []zfs.Version{bm(fs, "b2", "s2", 20), s2, s3}, Receiver: []zfs.Version{r(s2)}},
			want: "incremental pool/a@s2 -> @s3"},
		{name: "matching is by guid, not name",
			in: PlanInput{Sender: []zfs.Version{s1, s2}, Receiver: []zfs.Version{
				{Type: zfs.Snapshot, Filesystem: "x", Name: "s2", GUID: 42, CreateTXG: 5}}},
			conflict: ConflictNoCommon},
		{name: "diverged", in: PlanInput{Sender: []zfs.Version{s1, s2, s3}, Receiver: []zfs.Version{r(s1), r(snap(fs, "local", 15))}},
			conflict: ConflictDiverged},
		{name: "no sender snapshots", in: PlanInput{}, conflict: ConflictNoSenderSnapshots},
		{name: "resume full then incrementals",
			in:   PlanInput{Sender: []zfs.Version{s1, s2, s3}, Resume: &zfs.ResumeInfo{Token: "1-ab", ToGUID: s2.GUID, ToName: "pool/a@s2"}},
			want: "resume pool/a@s2; incremental pool/a@s2 -> @s3"},
		{name: "resume incremental",
			in: PlanInput{Sender: []zfs.Version{s1, s2, s3}, Receiver: []zfs.Version{r(s1)},
				Resume: &zfs.ResumeInfo{Token: "1-ab", FromGUID: s1.GUID, ToGUID: s3.GUID, ToName: "pool/a@s3"}},
			want: "resume pool/a@s3"},
		{name: "resume target gone", in: PlanInput{Sender: []zfs.Version{s1, s3}, Resume: &zfs.ResumeInfo{Token: "1-ab", ToGUID: s2.GUID, ToName: "pool/a@s2"}},
			conflict: ConflictResumeUnusable},
		{name: "receiver bookmarks ignored", in: PlanInput{Sender: []zfs.Version{s1, s2}, Receiver: []zfs.Version{bm("x", "b", "zz", 3)}},
			want: "full pool/a@s2"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			c.in.Filesystem = fs
			steps, err := Plan(c.in, c.cfg)
			if c.conflict != "" {
				var ce *ConflictError
				if !errors.As(err, &ce) || ce.Kind != c.conflict || !errors.Is(err, ErrConflict) {
					t.Fatalf("got steps %q err %v, want conflict %s", describe(steps), err, c.conflict)
				}
				if steps != nil {
					t.Fatalf("conflict with steps %q", describe(steps))
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := describe(steps); got != c.want {
				t.Fatalf("got  %q\nwant %q", got, c.want)
			}
		})
	}
}

func TestPlanRaw(t *testing.T) {
	steps, err := Plan(PlanInput{Filesystem: "p/e", Sender: []zfs.Version{snap("p/e", "a", 1), snap("p/e", "b", 2)}},
		PlanConfig{Raw: true, Initial: InitialAll})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range steps {
		if !s.Raw {
			t.Fatalf("step %s not raw", s)
		}
	}
}

// ExamplePlan plans the replication of a filesystem whose receiver has the
// first snapshot: one incremental step per newer snapshot.
func ExamplePlan() {
	v := func(typ zfs.VersionType, fs, name string, guid, txg uint64) zfs.Version {
		return zfs.Version{Type: typ, Filesystem: fs, Name: name, GUID: guid, CreateTXG: txg}
	}
	steps, err := Plan(PlanInput{
		Filesystem: "tank/garage",
		Sender: []zfs.Version{
			v(zfs.Bookmark, "tank/garage", "zrepl_CURSOR_G_0000000000000001_J_push", 1, 100),
			v(zfs.Snapshot, "tank/garage", "zrepl_2", 2, 200),
			v(zfs.Snapshot, "tank/garage", "zrepl_3", 3, 300),
		},
		Receiver: []zfs.Version{v(zfs.Snapshot, "wdc/zrepl/garage/tank/garage", "zrepl_1", 1, 55)},
	}, PlanConfig{})
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, s := range steps {
		fmt.Println(s)
	}
	// Output:
	// incremental tank/garage#zrepl_CURSOR_G_0000000000000001_J_push -> @zrepl_2
	// incremental tank/garage@zrepl_2 -> @zrepl_3
}

// ExamplePlan_diverged shows a receiver with a snapshot the sender never had:
// the conflict is reported and no step destroys anything.
func ExamplePlan_diverged() {
	_, err := Plan(PlanInput{
		Filesystem: "tank/garage",
		Sender:     []zfs.Version{{Type: zfs.Snapshot, Filesystem: "tank/garage", Name: "a", GUID: 1, CreateTXG: 1}},
		Receiver: []zfs.Version{
			{Type: zfs.Snapshot, Filesystem: "sink/tank/garage", Name: "a", GUID: 1, CreateTXG: 1},
			{Type: zfs.Snapshot, Filesystem: "sink/tank/garage", Name: "local", GUID: 9, CreateTXG: 2},
		},
	}, PlanConfig{})
	fmt.Println(errors.Is(err, ErrConflict))
	fmt.Println(err)
	// Output:
	// true
	// tank/garage: diverged: the receiver's newest snapshot @local (guid 9) is not on the sender; the newest common version is @a; the receiver was left untouched
}
