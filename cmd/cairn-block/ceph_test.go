//go:build ceph

package main

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	librados "github.com/ceph/go-ceph/rados"
	librbd "github.com/ceph/go-ceph/rbd"

	"github.com/cairn-backup/cairn/internal/cli"
	"github.com/cairn-backup/cairn/internal/testenv"
)

// cephImages creates RBD images of 8 MiB with 4 MiB of data each, removed
// (with their snapshots) when the test ends.
func cephImages(t *testing.T, env testenv.CephEnv, names ...string) {
	t.Helper()
	conn, err := librados.NewConn()
	if err != nil {
		t.Fatal(err)
	}
	if err := conn.ReadConfigFile(env.Conf); err != nil {
		t.Fatal(err)
	}
	if err := conn.Connect(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(conn.Shutdown)
	ioctx, err := conn.OpenIOContext(env.Pool)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ioctx.Destroy)
	for i, name := range names {
		opts := librbd.NewRbdImageOptions()
		err := librbd.CreateImage(ioctx, name, 8<<20, opts)
		opts.Destroy()
		if err != nil {
			t.Fatalf("CreateImage %s: %v", name, err)
		}
		img, err := librbd.OpenImage(ioctx, name, librbd.NoSnapshot)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := img.WriteAt(bytes.Repeat([]byte{byte(i + 1), 'x'}, 2<<20), 0); err != nil {
			t.Fatal(err)
		}
		img.Close()
	}
	t.Cleanup(func() {
		for _, name := range append(names, names[0]+"-restored") {
			img, err := librbd.OpenImage(ioctx, name, librbd.NoSnapshot)
			if err != nil {
				continue
			}
			if snaps, err := img.GetSnapshotNames(); err == nil {
				for _, s := range snaps {
					_ = img.GetSnapshot(s.Name).Remove()
				}
			}
			img.Close()
			_ = librbd.RemoveImage(ioctx, name)
		}
	})
}

func rbdExport(t *testing.T, conf, spec string) []byte {
	t.Helper()
	f := filepath.Join(t.TempDir(), "export")
	if out, err := exec.Command("rbd", "--conf", conf, "export", spec, f).CombinedOutput(); err != nil {
		t.Fatalf("rbd export %s: %v\n%s", spec, err, out)
	}
	b, err := os.ReadFile(f)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestCLIBackupAll runs backup-all over three images of which one fails (its
// volume name is too long): the others are backed up, the exit code is 1 and
// the JSON summary says which failed; a second run is incremental; restore
// to rbd:// creates the image and refuses to overwrite it without --force.
func TestCLIBackupAll(t *testing.T) {
	env := testenv.Ceph(t)
	b := make([]byte, 4)
	rand.Read(b)
	stem := "cairn-cli-" + hex.EncodeToString(b)
	long := stem + "-" + strings.Repeat("l", 240)
	cephImages(t, env, stem+"-a", stem+"-b", long)
	c := newCLI(t)
	c.ok("init")
	ceph := []string{"--ceph-conf", env.Conf}
	type summary struct {
		Images []struct {
			Image, Volume, Error, Version, Snapshot, Base string
			OK                                            bool
			BytesRead                                     int64 `json:"bytes_read"`
		}
		Succeeded, Failed int
	}
	prom := filepath.Join(t.TempDir(), "backup-all.prom")
	runAll := func() summary {
		t.Helper()
		code, out, errs := c.run("", append([]string{"backup-all", "--pool", env.Pool, "--image-regex", "^" + stem,
			"--volume-prefix", "k8s-", "--json", "--metrics-file", prom}, ceph...)...)
		if code != cli.ExitPartial {
			t.Fatalf("backup-all: exit %d, want 3 (one image fails, the others are backed up)\n%s\n%s", code, out, errs)
		}
		var s summary
		if err := json.Unmarshal([]byte(out), &s); err != nil {
			t.Fatalf("backup-all --json: %v\n%s", err, out)
		}
		if s.Succeeded != 2 || s.Failed != 1 || len(s.Images) != 3 {
			t.Fatalf("summary: %+v", s)
		}
		for _, im := range s.Images {
			if strings.HasSuffix(im.Image, "lll") == im.OK || (!im.OK && !strings.Contains(im.Error, "volume name")) {
				t.Errorf("image %s: ok=%v error %q", im.Image, im.OK, im.Error)
			}
		}
		return s
	}
	first := runAll()
	// The metrics file says which volume failed.
	mb, err := os.ReadFile(prom)
	if err != nil {
		t.Fatal(err)
	}
	for _, im := range first.Images {
		want := 0.0
		if im.OK {
			want = 1
		}
		if v := promValue(t, string(mb), "cairn_backup_valid", fmt.Sprintf("volume=%q", im.Volume)); v != want {
			t.Errorf("cairn_backup_valid of %s = %v, want %v", im.Volume, v, want)
		}
	}
	if v := promValue(t, string(mb), "cairn_last_run_success", `command="backup-all"`); v != 0 {
		t.Errorf("backup-all with a failed image: success = %v", v)
	}
	second := runAll()
	for i := range 2 {
		if f, s := first.Images[i], second.Images[i]; f.Base != "" || s.Base != f.Version {
			t.Errorf("image %s: first base %q, second base %q (want %s)", f.Image, f.Base, s.Base, f.Version)
		}
	}
	if v := first.Images[0].Volume; v != "k8s-"+stem+"-a" {
		t.Errorf("volume %q", v)
	}

	// Restore the newest version of image a to a new image, then refuse
	// to overwrite it.
	ver := second.Images[0].Version
	dest := "rbd://" + env.Pool + "/" + stem + "-a-restored"
	c.ok(append([]string{"restore", ver, dest}, ceph...)...)
	want := rbdExport(t, env.Conf, env.Pool+"/"+stem+"-a@"+second.Images[0].Snapshot)
	if got := rbdExport(t, env.Conf, env.Pool+"/"+stem+"-a-restored"); !bytes.Equal(got, want) {
		t.Errorf("restored image differs from rbd export of the snapshot")
	}
	if code, _, errs := c.run("", append([]string{"restore", ver, dest}, ceph...)...); code != 1 || !strings.Contains(errs, "exists") {
		t.Errorf("restore over an existing image: exit %d, %s", code, errs)
	}
	c.ok(append([]string{"restore", "--force", ver, dest}, ceph...)...)

	// backup of a single image, and usage errors.
	out := c.ok(append([]string{"backup", "--json", "rbd://" + env.Pool + "/" + stem + "-b", "vol-b"}, ceph...)...)
	if !strings.Contains(out, `"rbd-snapshot": "b-`) {
		t.Errorf("backup --json: %s", out)
	}
	if code, _, errs := c.run("", "backup", "--base", "x", "rbd://p/i", "v"); code != 2 {
		t.Errorf("backup rbd:// --base: exit %d (%s), want 2", code, errs)
	}
	if code, _, errs := c.run("", "backup", "rbd://p", "v"); code != 2 {
		t.Errorf("backup rbd://p: exit %d (%s), want 2", code, errs)
	}
	if code, _, _ := c.run("", "backup-all"); code != 2 {
		t.Errorf("backup-all without --pool: exit %d, want 2", code)
	}
}
