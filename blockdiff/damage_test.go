package blockdiff

import (
	"bytes"
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/cairn-backup/cairn/objstore"
)

// Issue 19, case 3: one damaged object never holds the repository hostage.

// damageObject flips a byte in the middle of the object at key.
func damageObject(t *testing.T, s objstore.Store, key string) {
	t.Helper()
	body := allObjects(t, s)[key]
	if len(body) == 0 {
		t.Fatalf("no object %s", key)
	}
	body = bytes.Clone(body)
	body[len(body)/2] ^= 0x55
	if err := s.Put(context.Background(), key, bytes.NewReader(body), int64(len(body))); err != nil {
		t.Fatal(err)
	}
}

// firstKey returns the first key under prefix.
func firstKey(t *testing.T, s objstore.Store, prefix string) string {
	t.Helper()
	for info, err := range s.List(context.Background(), prefix) {
		if err != nil {
			t.Fatal(err)
		}
		return info.Key
	}
	t.Fatalf("nothing under %s", prefix)
	return ""
}

func damageStores(t *testing.T, fn func(t *testing.T, s objstore.Store, pass string)) {
	t.Run("mem", func(t *testing.T) { fn(t, openStore(t, "mem"), "") })
	t.Run("file-encrypted", func(t *testing.T) { fn(t, openStore(t, "file"), "pw") })
	t.Run("s3", func(t *testing.T) { fn(t, s3Store(t), "pw") })
}

// TestDamagedManifest: ls shows the damaged version, enforce and scrub --all
// skip and report it, cleanup refuses (it cannot know what the manifest
// referenced) without deleting anything, and rm removes it.
func TestDamagedManifest(t *testing.T) {
	damageStores(t, func(t *testing.T, s objstore.Store, pass string) {
		ctx := context.Background()
		newRepo(t, s, pass)
		r := openRepo(t, s, Options{Passphrase: []byte(pass)})
		pool := blockPool(5, 4)
		imgs := [][]byte{blocksImage(pool, 0, 1), blocksImage(pool, 1, 2), blocksImage(pool, 2, 3)}
		var vs []*Version
		for _, img := range imgs {
			vs = append(vs, backupBytes(t, r, "vol", img, BackupOptions{}))
		}
		bad := vs[1]
		damageObject(t, s, versionKey(bad.ID))

		list, err := r.List(ctx, Filter{Volume: "vol"})
		if err != nil {
			t.Fatalf("ls with a damaged manifest: %v", err)
		}
		if len(list) != 3 {
			t.Fatalf("ls: %d versions", len(list))
		}
		for _, v := range list {
			if (v.ID == bad.ID) != (v.Status == StatusDamaged) {
				t.Fatalf("ls: %s is %s", v.ID, v.Status)
			}
			if v.Status == StatusDamaged && v.Error == "" {
				t.Fatal("damaged version without a reason")
			}
		}

		res, err := r.Enforce(ctx, "latest1", EnforceOptions{DryRun: true})
		if err != nil {
			t.Fatalf("enforce with a damaged manifest: %v", err)
		}
		if len(res.Damaged) != 1 || res.Damaged[0].ID != bad.ID || len(res.Volumes) != 1 || len(res.Volumes[0].Removed) != 1 {
			t.Fatalf("enforce: %+v", res)
		}

		rep, err := r.Scrub(ctx, ScrubOptions{All: true})
		if err != nil {
			t.Fatalf("scrub --all with a damaged manifest: %v", err)
		}
		if rep.OK() || !slices.Equal(rep.DamagedVersions, []string{bad.ID}) || rep.VersionsChecked != 2 || len(rep.Marked) != 0 {
			t.Fatalf("scrub: %+v", rep)
		}
		if rep, err := r.Scrub(ctx, ScrubOptions{Versions: []string{bad.ID}, Deep: true}); err != nil || !slices.Equal(rep.DamagedVersions, []string{bad.ID}) {
			t.Fatalf("deep-scrub of the damaged version: %+v %v", rep, err)
		}

		objects := countPrefix(t, s, "data/")
		if _, err := r.Cleanup(ctx, CleanupOptions{Grace: -1}); err == nil || !strings.Contains(err.Error(), bad.ID) {
			t.Fatalf("cleanup with a damaged manifest: %v", err)
		}
		if n := countPrefix(t, s, "data/"); n != objects {
			t.Fatalf("cleanup deleted %d objects", objects-n)
		}

		if err := r.Remove(ctx, bad.ID, RemoveOptions{}); err != nil {
			t.Fatalf("rm of a damaged version: %v", err)
		}
		if _, err := r.Cleanup(ctx, CleanupOptions{Grace: -1}); err != nil {
			t.Fatal(err)
		}
		for i, v := range []*Version{vs[0], vs[2]} {
			if !bytes.Equal(restoreBytes(t, r, v.ID), imgs[2*i]) {
				t.Fatalf("%s restores wrong bytes", v.ID)
			}
		}
		if rep := scrub(t, r, true); !rep.OK() {
			t.Fatalf("deep scrub after rm: %+v", rep)
		}
	})
}

// TestDamagedIndexSegment: a backup treats the damaged segment as absent,
// scrub reports it, cleanup replaces it without deleting anything a version
// references, and repair index rebuilds the index so that dedup works again.
func TestDamagedIndexSegment(t *testing.T) {
	damageStores(t, func(t *testing.T, s objstore.Store, pass string) {
		ctx := context.Background()
		newRepo(t, s, pass)
		r := openRepo(t, s, Options{Passphrase: []byte(pass)})
		pool := blockPool(6, 4)
		img1 := blocksImage(pool, 0, 1, 2)
		v1 := backupBytes(t, r, "vol", img1, BackupOptions{})
		damageObject(t, s, firstKey(t, s, "index/"))

		// A new process: its dedup set comes from the damaged index.
		r2 := openRepo(t, s, Options{Passphrase: []byte(pass)})
		img2 := blocksImage(pool, 1, 2, 3)
		v2 := backupBytes(t, r2, "vol", img2, BackupOptions{})
		if v2.Stats.BlocksNew != 3 {
			t.Fatalf("backup with a damaged segment: %+v (it should store again what the segment listed)", v2.Stats)
		}

		rep, err := r2.Scrub(ctx, ScrubOptions{All: true})
		if err != nil {
			t.Fatalf("scrub with a damaged segment: %v", err)
		}
		if rep.OK() || len(rep.DamagedSegments) != 1 || len(rep.Marked) != 0 {
			t.Fatalf("scrub: %+v", rep)
		}

		// repair index: rebuilt from the manifests and data/.
		fix, err := r2.RepairIndex(ctx, RepairIndexOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if len(fix.DamagedSegments) != 1 || fix.IndexEntries != 4 || fix.SegmentsAfter != 1 {
			t.Fatalf("repair index: %+v", fix)
		}
		v3 := backupBytes(t, openRepo(t, s, Options{Passphrase: []byte(pass)}), "vol", blocksImage(pool, 0, 3), BackupOptions{})
		if v3.Stats.BlocksNew != 0 {
			t.Fatalf("dedup after repair index: %+v", v3.Stats)
		}

		// Damage the index again: cleanup goes on, deletes nothing any
		// version references, and replaces the damaged segment.
		damageObject(t, s, firstKey(t, s, "index/"))
		res, err := r2.Cleanup(ctx, CleanupOptions{Grace: -1})
		if err != nil {
			t.Fatalf("cleanup with a damaged segment: %v", err)
		}
		if len(res.DamagedSegments) != 1 || res.Missing != 0 {
			t.Fatalf("cleanup: %+v", res)
		}
		for _, c := range []struct {
			v   *Version
			img []byte
		}{{v1, img1}, {v2, img2}, {v3, blocksImage(pool, 0, 3)}} {
			if !bytes.Equal(restoreBytes(t, r2, c.v.ID), c.img) {
				t.Fatalf("%s restores wrong bytes after cleanup", c.v.ID)
			}
		}
		if rep := scrub(t, r2, true); !rep.OK() {
			t.Fatalf("deep scrub after cleanup: %+v", rep)
		}
	})
}
