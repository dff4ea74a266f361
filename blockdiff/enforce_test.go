package blockdiff

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/retention"
)

// TestEnforceMatchesRetention applies Benji rules and a zrepl grid to a
// synthetic history and checks that exactly what retention.Explain destroys
// is removed, with its reasons, while protected, invalid and incomplete
// versions are neither counted nor removed.
func TestEnforceMatchesRetention(t *testing.T) {
	ctx := context.Background()
	now := time.Date(2026, 11, 26, 6, 0, 0, 0, time.UTC)
	for name, spec := range map[string]string{"benji": "latest3,days7,weeks4", "grid": "1x1d(keep=all) | 6x1d | 3x7d"} {
		t.Run(name, func(t *testing.T) {
			r := newRepo(t, openStore(t, "mem"), "")
			img := randBytes(5, 100)
			special := map[int]func(v *Version){
				2:  func(v *Version) { v.Protected = true },
				5:  func(v *Version) { v.Status = StatusInvalid },
				9:  func(v *Version) { v.Status, v.refs = StatusIncomplete, nil },
				30: func(v *Version) { v.Protected = true },
			}
			var items []retention.Item
			skipped := map[string]bool{}
			for i := range 40 { // one every 13 hours, back from now
				v := backupBytes(t, r, "vol", img, BackupOptions{})
				created := now.Add(-time.Duration(i)*13*time.Hour - time.Minute)
				if _, err := r.update(ctx, v.ID, func(v *Version) error {
					v.Created = created
					if f := special[i]; f != nil {
						f(v)
					}
					return nil
				}); err != nil {
					t.Fatal(err)
				}
				if special[i] != nil {
					skipped[v.ID] = true
				} else {
					items = append(items, retention.Item{Name: v.ID, Created: created})
				}
			}
			other := backupBytes(t, r, "other", img, BackupOptions{}) // another volume: untouched with --volume

			policy, err := retention.Parse(spec, time.UTC)
			if err != nil {
				t.Fatal(err)
			}
			expl := retention.Explain(policy, now, items)
			opts := EnforceOptions{Filter: Filter{Volume: "vol"}, Now: now, Location: time.UTC, DryRun: true}
			res, err := r.Enforce(ctx, spec, opts)
			if err != nil {
				t.Fatal(err)
			}
			if len(res.Volumes) != 1 {
				t.Fatalf("volumes: %+v", res.Volumes)
			}
			ve := res.Volumes[0]
			var wantKept, wantGone []string
			reasons := map[string][]string{}
			for _, d := range expl {
				if d.Keep {
					wantKept = append(wantKept, d.Item.Name)
					reasons[d.Item.Name] = d.Reasons
				} else {
					wantGone = append(wantGone, d.Item.Name)
				}
			}
			if ids := decisionIDs(ve.Kept); !slices.Equal(ids, wantKept) {
				t.Fatalf("kept %v, retention keeps %v", ids, wantKept)
			}
			if ids := decisionIDs(ve.Removed); !slices.Equal(ids, wantGone) || len(wantGone) == 0 {
				t.Fatalf("removed %v, retention destroys %v", ids, wantGone)
			}
			for _, d := range ve.Kept {
				if !slices.Equal(d.Reasons, reasons[d.ID]) {
					t.Errorf("%s kept for %v, retention says %v", d.ID, d.Reasons, reasons[d.ID])
				}
			}
			if len(ve.Skipped) != len(skipped) {
				t.Errorf("skipped %+v", ve.Skipped)
			}
			if n := len(statuses(t, r)); n != 41 {
				t.Fatalf("the dry run removed versions: %d left", n)
			}

			opts.DryRun = false
			if _, err := r.Enforce(ctx, spec, opts); err != nil {
				t.Fatal(err)
			}
			left := statuses(t, r)
			if len(left) != len(wantKept)+len(skipped)+1 {
				t.Fatalf("%d versions left, want %d kept + %d skipped + 1", len(left), len(wantKept), len(skipped))
			}
			for id := range skipped {
				if _, ok := left[id]; !ok {
					t.Errorf("skipped version %s was removed", id)
				}
			}
			if _, ok := left[other.ID]; !ok {
				t.Error("another volume's version was removed")
			}
		})
	}
	r := newRepo(t, openStore(t, "mem"), "")
	if _, err := r.Enforce(ctx, "latest0", EnforceOptions{}); err == nil {
		t.Error("a bad policy was accepted")
	}
}

func decisionIDs(ds []EnforceDecision) []string {
	var out []string
	for _, d := range ds {
		out = append(out, d.ID)
	}
	return out
}
