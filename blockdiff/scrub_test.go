package blockdiff

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/cairn-backup/cairn/objstore"
)

// scrub runs a scrub of every valid version.
func scrub(t *testing.T, r *Repository, deep bool) *ScrubReport {
	t.Helper()
	rep, err := r.Scrub(context.Background(), ScrubOptions{Deep: deep, All: true})
	if err != nil {
		t.Fatal(err)
	}
	return rep
}

// TestScrubMarksExactlyTheAffectedVersions flips one bit of one stored
// object and deletes another: the deep scrub finds the first, the light scrub
// the second, and each marks invalid exactly the versions that reference the
// damaged object.
func TestScrubMarksExactlyTheAffectedVersions(t *testing.T) {
	for _, pass := range []string{"", "pw"} {
		t.Run("encrypted="+pass, func(t *testing.T) {
			s := openStore(t, "mem")
			r := newRepo(t, s, pass)
			ctx := context.Background()
			pool := blockPool(1, 8) // A..H = 0..7
			zero := make([]byte, testBS)
			imgs := [][]byte{
				blocksImage(pool, 0, 1, 2),                  // v1: A B C
				blocksImage(pool, 0, 3, 4),                  // v2: A D E
				blocksImage(pool, 5, 6, 7),                  // v3: F G H
				append(bytes.Clone(pool[3]), zero...),       // v4: D, zeros
				append(bytes.Clone(zero), pool[0][:100]...), // v5: zeros, A's first 100 bytes
			}
			var vs []*Version
			for i, img := range imgs {
				vs = append(vs, backupBytes(t, r, "vol", img, BackupOptions{Labels: map[string]string{"n": string(rune('1' + i))}}))
			}
			for _, deep := range []bool{false, true} {
				if rep := scrub(t, r, deep); !rep.OK() || rep.VersionsChecked != 5 || rep.ObjectsChecked != 9 {
					t.Fatalf("clean repository, deep=%v: %+v", deep, rep)
				}
			}
			idD, idG := vs[1].refs[1].ID, vs[2].refs[1].ID

			// One bit of D flipped: same size, so only the deep scrub sees it.
			body := getObject(t, s, dataKey(idD))
			body[len(body)-1] ^= 0x10
			putObject(t, s, dataKey(idD), body)
			if rep := scrub(t, r, false); !rep.OK() {
				t.Fatalf("light scrub flagged a same-size corruption: %+v", rep)
			}
			rep := scrub(t, r, true)
			if rep.OK() || !sameSet(rep.Marked, []string{vs[1].ID, vs[3].ID}) {
				t.Fatalf("deep scrub marked %v, want v2 and v4 (%s %s)", rep.Marked, vs[1].ID, vs[3].ID)
			}
			wantFail := map[string]int64{vs[1].ID: testBS, vs[3].ID: 0}
			if len(rep.Failures) != 2 {
				t.Fatalf("failures: %+v", rep.Failures)
			}
			for _, f := range rep.Failures {
				if off, ok := wantFail[f.Version]; !ok || f.Offset != off || f.Object != idD.String() || f.Problem != ProblemCorrupt {
					t.Errorf("failure %+v", f)
				}
			}
			if !rep.IndexRepaired {
				t.Error("index not repaired")
			}

			// G deleted: the light scrub finds it (of the versions still valid).
			if err := s.Delete(ctx, dataKey(idG)); err != nil {
				t.Fatal(err)
			}
			rep = scrub(t, r, false)
			if !slices.Equal(rep.Marked, []string{vs[2].ID}) || rep.VersionsChecked != 3 {
				t.Fatalf("light scrub after a delete: %+v", rep)
			}
			if f := rep.Failures[0]; f.Offset != 2*testBS-testBS || f.Problem != ProblemMissing {
				t.Errorf("missing-object failure %+v", f)
			}
			want := map[string]Status{vs[0].ID: StatusValid, vs[1].ID: StatusInvalid, vs[2].ID: StatusInvalid,
				vs[3].ID: StatusInvalid, vs[4].ID: StatusValid}
			if got := statuses(t, r); !mapsEqual(got, want) {
				t.Fatalf("statuses %v, want %v", got, want)
			}
			v2, _ := r.Version(ctx, vs[1].ID)
			if len(v2.Damage) != 1 || v2.Damage[0].Offset != testBS || v2.Error == "" {
				t.Errorf("manifest damage record: %+v %q", v2.Damage, v2.Error)
			}

			// Restore refuses invalid versions unless told, then fails at the block.
			w := &memWriter{b: make([]byte, 3*testBS)}
			if err := r.Restore(ctx, vs[1].ID, w, RestoreOptions{}); !errors.Is(err, ErrNotValid) {
				t.Fatalf("restore of an invalid version: %v", err)
			}
			if err := r.Restore(ctx, vs[1].ID, w, RestoreOptions{AllowInvalid: true}); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("forced restore of a corrupt block: %v", err)
			}
			if err := r.Restore(ctx, vs[2].ID, w, RestoreOptions{AllowInvalid: true}); !errors.Is(err, objstore.ErrNotExist) {
				t.Fatalf("forced restore of a missing block: %v", err)
			}
			if got := restoreBytes(t, r, vs[0].ID); !bytes.Equal(got, imgs[0]) {
				t.Fatal("an unaffected version no longer restores")
			}

			// The damaged objects left the index: backing the data up again
			// stores them again, which heals the repository. The process that
			// stored them (and scrubbed) notices too.
			r2 := openRepo(t, s, Options{Passphrase: []byte(pass)})
			v6 := backupBytes(t, r, "vol", imgs[1], BackupOptions{})
			v7 := backupBytes(t, r2, "vol", imgs[2], BackupOptions{})
			if v6.Stats.BlocksNew != 1 || v7.Stats.BlocksNew != 1 {
				t.Fatalf("re-backup stored %d and %d blocks, want 1 each", v6.Stats.BlocksNew, v7.Stats.BlocksNew)
			}
			if rep := scrub(t, r2, true); !rep.OK() {
				t.Fatalf("after healing: %+v", rep)
			}
			if err := r.Restore(ctx, vs[1].ID, &memWriter{b: make([]byte, 3*testBS)}, RestoreOptions{AllowInvalid: true}); err != nil {
				t.Fatalf("forced restore of a healed invalid version: %v", err)
			}
		})
	}
}

// TestScrubPercentAndErrors samples objects and rejects bad options.
func TestScrubPercentAndErrors(t *testing.T) {
	r := newRepo(t, openStore(t, "mem"), "")
	ctx := context.Background()
	v := backupBytes(t, r, "vol", randBytes(3, 20*testBS), BackupOptions{})
	rep, err := r.Scrub(ctx, ScrubOptions{Versions: []string{v.ID}, Percent: 25, Deep: true})
	if err != nil || rep.ObjectsChecked != 5 || !rep.OK() {
		t.Fatalf("25%% of 20 objects: %+v %v", rep, err)
	}
	for _, o := range []ScrubOptions{{}, {All: true, Percent: 101}, {All: true, Percent: -1}} {
		if _, err := r.Scrub(ctx, o); err == nil {
			t.Errorf("%+v accepted", o)
		}
	}
	if _, err := r.Scrub(ctx, ScrubOptions{Versions: []string{"nope"}}); !errors.Is(err, ErrVersionNotFound) {
		t.Errorf("unknown version: %v", err)
	}
	if _, err := r.Scrub(ctx, ScrubOptions{Versions: []string{"../config"}}); err == nil {
		t.Error("bad version ID accepted")
	}
}

func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

func mapsEqual[K comparable, V comparable](a, b map[K]V) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// TestScrubVersionPercent: with All, VersionPercent checks a random share
// of the valid versions (at least one, in List's order), plus every named
// version; out-of-range shares are refused.
func TestScrubVersionPercent(t *testing.T) {
	ctx := context.Background()
	r := newRepo(t, openStore(t, "mem"), "")
	var ids []string
	for i := range 10 {
		ids = append(ids, backupBytes(t, r, fmt.Sprintf("vol%d", i), randBytes(uint64(500+i), testBS), BackupOptions{}).ID)
	}
	for range 20 {
		rep, err := r.Scrub(ctx, ScrubOptions{All: true, VersionPercent: 30})
		if err != nil {
			t.Fatal(err)
		}
		if rep.VersionsChecked != 3 || rep.ObjectsChecked != 3 || rep.VersionPercent != 30 {
			t.Fatalf("30%% of 10 versions: %+v", rep)
		}
	}
	rep, err := r.Scrub(ctx, ScrubOptions{All: true, VersionPercent: 1, Versions: []string{ids[0], ids[9]}})
	if err != nil {
		t.Fatal(err)
	}
	if rep.VersionsChecked < 2 || rep.VersionsChecked > 3 {
		t.Fatalf("1%% of 10 plus two named: %d versions", rep.VersionsChecked)
	}
	if _, err := r.Scrub(ctx, ScrubOptions{All: true, VersionPercent: 101}); err == nil || !strings.Contains(err.Error(), "version percent 101") {
		t.Fatalf("101%%: %v", err)
	}
	// Every version is picked sometimes: the sample is random, not the first ones.
	seen := map[int]bool{}
	for range 60 {
		vs, _, err := r.scrubSelect(ctx, ScrubOptions{All: true, VersionPercent: 10})
		if err != nil || len(vs) != 1 {
			t.Fatalf("10%%: %d versions, %v", len(vs), err)
		}
		seen[slices.Index(ids, vs[0].ID)] = true
	}
	if len(seen) < 5 {
		t.Fatalf("60 samples of one version picked only %v", seen)
	}
}
