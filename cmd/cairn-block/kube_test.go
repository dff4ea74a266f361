//go:build ceph

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"

	librados "github.com/ceph/go-ceph/rados"
	librbd "github.com/ceph/go-ceph/rbd"
	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/cairn-backup/cairn/internal/kubetest"
	"github.com/cairn-backup/cairn/internal/testenv"
)

// rbdPool opens the test pool for writing images from the tests.
func rbdPool(t *testing.T, env testenv.CephEnv) *librados.IOContext {
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
	return ioctx
}

// writeImage writes data at off into the image name.
func writeImage(t *testing.T, ioctx *librados.IOContext, name string, off int64, data []byte) {
	t.Helper()
	img, err := librbd.OpenImage(ioctx, name, librbd.NoSnapshot)
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	if _, err := img.WriteAt(data, off); err != nil {
		t.Fatal(err)
	}
}

// snapshots returns the snapshot names of an image.
func snapshots(t *testing.T, ioctx *librados.IOContext, name string) []string {
	t.Helper()
	img, err := librbd.OpenImage(ioctx, name, librbd.NoSnapshot)
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	ss, err := img.GetSnapshotNames()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, s := range ss {
		out = append(out, s.Name)
	}
	return out
}

// kubeSummary is backup-all --selector --json.
type kubeSummary struct {
	Volumes []struct {
		Namespace, PVC, PV, Driver, Image, Volume, Error, Version, Snapshot, Base string
		OK                                                                        bool
		FullReason                                                                string `json:"full_reason"`
		BytesRead                                                                 int64  `json:"bytes_read"`
	}
	Succeeded, Failed int
}

func (s kubeSummary) byVolume() map[string]int {
	m := map[string]int{}
	for i, v := range s.Volumes {
		m[v.Volume] = i
	}
	return m
}

// backupAllKube runs backup-all with args and --json and decodes the
// summary; the exit code must be want.
func backupAllKube(t *testing.T, c *tcli, want int, args ...string) kubeSummary {
	t.Helper()
	code, out, errs := c.run("", append([]string{"backup-all", "--json"}, args...)...)
	if code != want {
		t.Fatalf("backup-all %v: exit %d, want %d\n%s\n%s", args, code, want, out, errs)
	}
	var s kubeSummary
	if err := json.Unmarshal([]byte(out), &s); err != nil {
		t.Fatalf("backup-all --json: %v\n%s", err, out)
	}
	return s
}

// TestKubeBackupAllAndRestorePVC runs against the real API server and Ceph:
// PVs point at RBD images of the test cluster, bound to PVCs of two
// namespaces. backup-all --selector backs up exactly the labelled PVCs (an
// unbound one and one of another driver fail, named, and the others go on:
// exit 3), --namespace narrows to one namespace, the versions carry the
// PVC's labels, and restore-pvc writes the version's bytes back into the
// PVC's image, refusing an attached volume (unless --force) and a smaller
// image. The same commands run as the CronJobs' ServiceAccount.
func TestKubeBackupAllAndRestorePVC(t *testing.T) {
	cenv := testenv.Ceph(t)
	kenv := kubetest.New(t)
	ctx := context.Background()
	sfx := kubetest.Suffix()
	stem := "cairn-kube-" + sfx
	cephImages(t, cenv, stem+"-meta", stem+"-scratch", stem+"-photos", stem+"-small")
	ioctx := rbdPool(t, cenv)
	// the "small" image is 4 MiB: smaller than the 8 MiB versions
	if img, err := librbd.OpenImage(ioctx, stem+"-small", librbd.NoSnapshot); err != nil {
		t.Fatal(err)
	} else {
		if err := img.Resize(4 << 20); err != nil {
			t.Fatal(err)
		}
		img.Close()
	}

	garage, media := kenv.Namespace(t, "garage-"+sfx), kenv.Namespace(t, "media-"+sfx)
	yes := map[string]string{"backup-this-pvc": "true", "cairn-test": sfx}
	rbdPVC := func(ns, name, image string, lbl map[string]string) *corev1.PersistentVolumeClaim {
		return kenv.BoundPVC(t, kubetest.PVC{Namespace: ns, Name: name, Labels: lbl, StorageClass: "ceph-rbd", Size: "8Mi",
			Source: kubetest.CephRBD(cenv.Pool, "", image)})
	}
	meta := rbdPVC(garage, "meta", stem+"-meta", yes)
	rbdPVC(garage, "scratch", stem+"-scratch", map[string]string{"backup-this-pvc": "false", "cairn-test": sfx})
	rbdPVC(media, "photos", stem+"-photos", yes)
	rbdPVC(media, "small", stem+"-small", map[string]string{"cairn-test": sfx})
	kenv.BoundPVC(t, kubetest.PVC{Namespace: media, Name: "pending", Labels: yes, Pending: true,
		Source: kubetest.CephRBD(cenv.Pool, "", stem+"-photos")})
	kenv.BoundPVC(t, kubetest.PVC{Namespace: media, Name: "nfs", Labels: yes,
		Source: corev1.PersistentVolumeSource{CSI: &corev1.CSIPersistentVolumeSource{Driver: "nfs.csi.k8s.io", VolumeHandle: "srv#x"}}})

	c := newCLI(t)
	c.ok("init")
	conn := []string{"--kubeconfig", kenv.Kubeconfig, "--ceph-conf", cenv.Conf}
	sel := "backup-this-pvc=true,cairn-test=" + sfx
	prom := t.TempDir() + "/backup-all.prom"

	// All namespaces: the three labelled RBD PVCs... and two that fail.
	s := backupAllKube(t, c, 3, append([]string{"--selector", sel, "--all-namespaces", "--metrics-file", prom}, conn...)...)
	idx := s.byVolume()
	if s.Succeeded != 2 || s.Failed != 2 || len(s.Volumes) != 4 {
		t.Fatalf("summary: %+v", s)
	}
	for _, name := range []string{garage + "/meta", media + "/photos"} {
		v := s.Volumes[idx[name]]
		if !v.OK || v.Version == "" || v.FullReason != "no base" || v.Driver != "rbd.csi.ceph.com" {
			t.Errorf("%s: %+v", name, v)
		}
	}
	if v := s.Volumes[idx[garage+"/meta"]]; v.Image != cenv.Pool+"/"+stem+"-meta" || v.PVC != "meta" || v.Namespace != garage {
		t.Errorf("meta: %+v", v)
	}
	for name, want := range map[string][]string{
		media + "/nfs":     {"PVC " + media + "/nfs", "driver nfs.csi.k8s.io", "unsupported driver"},
		media + "/pending": {"PVC " + media + "/pending", "not bound"},
	} {
		v := s.Volumes[idx[name]]
		for _, w := range want {
			if v.OK || !strings.Contains(v.Error, w) {
				t.Errorf("%s: ok %v, error %q, want it to say %q", name, v.OK, v.Error, w)
			}
		}
	}
	mb, err := os.ReadFile(prom)
	if err != nil {
		t.Fatal(err)
	}
	for vol, want := range map[string]float64{garage + "/meta": 1, media + "/photos": 1, media + "/nfs": 0, media + "/pending": 0} {
		if got := promValue(t, string(mb), "cairn_backup_valid", fmt.Sprintf("volume=%q", vol)); got != want {
			t.Errorf("metrics: cairn_backup_valid{volume=%q} = %v, want %v", vol, got, want)
		}
	}

	// The versions carry the PVC's labels: ls --label finds them.
	var ls []struct {
		ID, Volume string
		Labels     map[string]string
	}
	out := c.ok("ls", "--json", "--label", "k8s-pvc-uid="+string(meta.UID))
	if err := json.Unmarshal([]byte(out), &ls); err != nil || len(ls) != 1 {
		t.Fatalf("ls --label k8s-pvc-uid: %v\n%s", err, out)
	}
	for k, v := range map[string]string{"k8s-namespace": garage, "k8s-pvc": "meta", "k8s-pv": "pv-" + garage + "-meta",
		"k8s-storage-class": "ceph-rbd", "k8s-driver": "rbd.csi.ceph.com", "k8s-rbd-image": cenv.Pool + "/" + stem + "-meta"} {
		if ls[0].Labels[k] != v {
			t.Errorf("label %s = %q, want %q (%v)", k, ls[0].Labels[k], v, ls[0].Labels)
		}
	}

	// One namespace: only garage's PVC, differential from the first run.
	writeImage(t, ioctx, stem+"-meta", 1<<20, bytes.Repeat([]byte("changed!"), 1<<14))
	s2 := backupAllKube(t, c, 0, append([]string{"--selector", "backup-this-pvc=true", "--namespace", garage}, conn...)...)
	if len(s2.Volumes) != 1 || s2.Volumes[0].Volume != garage+"/meta" || s2.Volumes[0].Base != s.Volumes[idx[garage+"/meta"]].Version ||
		s2.Volumes[0].FullReason != "" {
		t.Fatalf("--namespace %s: %+v", garage, s2)
	}
	ver := s2.Volumes[0].Version
	want := rbdExport(t, cenv.Conf, cenv.Pool+"/"+stem+"-meta@"+s2.Volumes[0].Snapshot)

	// Scribble over the PVC's image, then restore it.
	writeImage(t, ioctx, stem+"-meta", 0, bytes.Repeat([]byte{0xee}, 3<<20))
	// Attached: refused, naming the VolumeAttachment and node.
	pv := "pv-" + garage + "-meta"
	va, err := kenv.Clientset.StorageV1().VolumeAttachments().Create(ctx, &storagev1.VolumeAttachment{
		ObjectMeta: metav1.ObjectMeta{Name: "csi-" + sfx},
		Spec: storagev1.VolumeAttachmentSpec{Attacher: "rbd.csi.ceph.com", NodeName: "node-" + sfx,
			Source: storagev1.VolumeAttachmentSource{PersistentVolumeName: &pv}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	restore := append([]string{"restore-pvc", ver, "--namespace", garage, "--pvc", "meta"}, conn...)
	if code, _, errs := c.run("", restore...); code != 1 || !strings.Contains(errs, "csi-"+sfx) || !strings.Contains(errs, "node-"+sfx) ||
		!strings.Contains(errs, "--force") {
		t.Errorf("restore-pvc of an attached PVC: exit %d, %s", code, errs)
	}
	if got := rbdExport(t, cenv.Conf, cenv.Pool+"/"+stem+"-meta"); bytes.Equal(got, want) {
		t.Fatal("the refused restore wrote the image")
	}
	c.ok(append(restore, "--force")...)
	if got := rbdExport(t, cenv.Conf, cenv.Pool+"/"+stem+"-meta"); !bytes.Equal(got, want) {
		t.Errorf("restore-pvc --force: the image differs from the backed-up snapshot")
	}
	// Detached: restores without --force.
	if err := kenv.Clientset.StorageV1().VolumeAttachments().Delete(ctx, va.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	writeImage(t, ioctx, stem+"-meta", 5<<20, bytes.Repeat([]byte{0xdd}, 1<<20))
	c.ok(restore...)
	if got := rbdExport(t, cenv.Conf, cenv.Pool+"/"+stem+"-meta"); !bytes.Equal(got, want) {
		t.Errorf("restore-pvc: the image differs from the backed-up snapshot")
	}
	// A smaller target is refused and left alone.
	before := rbdExport(t, cenv.Conf, cenv.Pool+"/"+stem+"-small")
	if code, _, errs := c.run("", append([]string{"restore-pvc", ver, "--namespace", media, "--pvc", "small"}, conn...)...); code != 1 ||
		!strings.Contains(errs, "smaller") || !strings.Contains(errs, media+"/small") {
		t.Errorf("restore-pvc into a smaller image: exit %d, %s", code, errs)
	}
	if after := rbdExport(t, cenv.Conf, cenv.Pool+"/"+stem+"-small"); !bytes.Equal(before, after) {
		t.Error("the refused restore changed the smaller image")
	}
	// A PVC of another driver: the error names it and the driver.
	if code, _, errs := c.run("", append([]string{"restore-pvc", ver, "--namespace", media, "--pvc", "nfs"}, conn...)...); code != 1 ||
		!strings.Contains(errs, media+"/nfs") || !strings.Contains(errs, "nfs.csi.k8s.io") {
		t.Errorf("restore-pvc into an nfs PVC: exit %d, %s", code, errs)
	}

	// As the CronJobs' ServiceAccount (deploy/rbac.yaml applied for real).
	ap, err := kubetest.NewApplier(kenv.Config)
	if err != nil {
		t.Fatal(err)
	}
	objs, err := kubetest.ReadManifests("../../deploy/namespace.yaml", "../../deploy/rbac.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range objs {
		if err := ap.Apply(ctx, o, "", false); err != nil {
			t.Fatal(err)
		}
	}
	kenv.WaitListPVCs(t, "cairn-backup", "cairn-block")
	saConn := []string{"--kubeconfig", kenv.ImpersonatingKubeconfig(t, "cairn-backup", "cairn-block"), "--ceph-conf", cenv.Conf}
	s3 := backupAllKube(t, c, 3, append([]string{"--selector", sel, "--all-namespaces"}, saConn...)...)
	if s3.Succeeded != 2 || s3.Failed != 2 {
		t.Errorf("backup-all as the ServiceAccount: %+v", s3)
	}
	c.ok(append([]string{"restore-pvc", s3.Volumes[s3.byVolume()[garage+"/meta"]].Version, "--namespace", garage, "--pvc", "meta"}, saConn...)...)

	// Usage errors.
	for _, args := range [][]string{
		{"backup-all", "--selector", "app in (a,", "--all-namespaces"},
		{"backup-all", "--selector", "a=b"},
		{"backup-all", "--namespace", "x"},
		{"backup-all", "--selector", "a=b", "--namespace", "x", "--all-namespaces"},
		{"backup-all", "--selector", "a=b", "--all-namespaces", "--pool", "rbd"},
		{"backup-all", "--pool", "rbd", "--snapshot-prefix", "a/b"},
		{"restore-pvc", "v", "--pvc", "x"},
	} {
		if code, _, errs := c.run("", args...); code != 2 {
			t.Errorf("%v: exit %d, want 2\n%s", args, code, errs)
		} else if args[2] == "app in (a," && !strings.Contains(errs, `"app in (a,"`) {
			t.Errorf("a bad selector's error does not name it: %s", errs)
		}
	}
}

// TestKubeSnapshotPrefixes: two repositories back up the same PVC image,
// alternating, as garage-meta-ceph (03:00) and benji-backup-all (07:30) do.
// With a snapshot prefix each, every backup after the first is
// differential in both repositories; with the same prefix, each run
// rotates away the other's base ("no base"), which is what the seed's
// CronJobs did before.
func TestKubeSnapshotPrefixes(t *testing.T) {
	cenv := testenv.Ceph(t)
	kenv := kubetest.New(t)
	sfx := kubetest.Suffix()
	stem := "cairn-prefix-" + sfx
	cephImages(t, cenv, stem+"-own", stem+"-overlap", stem+"-shared")
	ioctx := rbdPool(t, cenv)
	ns := kenv.Namespace(t, "garage-"+sfx)
	for _, name := range []string{"own", "overlap", "shared"} {
		kenv.BoundPVC(t, kubetest.PVC{Namespace: ns, Name: name, Labels: map[string]string{"backup-this-pvc": "true", "prefixes": name},
			Size: "8Mi", Source: kubetest.CephRBD(cenv.Pool, "", stem+"-"+name)})
	}
	conn := []string{"--kubeconfig", kenv.Kubeconfig, "--ceph-conf", cenv.Conf, "--namespace", ns}

	for _, tc := range []struct {
		pvc              string
		prefix1, prefix2 string
		differential     bool
	}{
		{"own", "b-", "garage-meta-", true},
		{"overlap", "b-", "b-meta-", true}, // b-'s rotation must leave b-meta-<timestamp> alone
		{"shared", "b-", "b-", false},
	} {
		c1, c2 := newCLI(t), newCLI(t)
		c1.env["CAIRN_REPO"] += "-" + tc.pvc + "-benji"
		c2.env["CAIRN_REPO"] += "-" + tc.pvc + "-garage"
		c1.ok("init")
		c2.ok("init")
		for round := range 3 {
			for i, c := range []*tcli{c1, c2} {
				prefix := []string{tc.prefix1, tc.prefix2}[i]
				writeImage(t, ioctx, stem+"-"+tc.pvc, int64(round*i)<<20, bytes.Repeat([]byte{byte(10*round + i + 1)}, 64<<10))
				s := backupAllKube(t, c, 0, append([]string{"--selector", "prefixes=" + tc.pvc, "--snapshot-prefix", prefix}, conn...)...)
				v := s.Volumes[0]
				if round == 0 {
					continue // the first backup of each repository reads everything
				}
				if tc.differential && (v.Base == "" || v.FullReason != "") {
					t.Errorf("prefixes %s/%s, round %d, repository %d: full read (%q), want differential", tc.prefix1, tc.prefix2, round, i+1, v.FullReason)
				}
				if !tc.differential && v.FullReason != "no base" {
					t.Errorf("one prefix %s for both, round %d, repository %d: full_reason %q, want \"no base\"", tc.prefix1, round, i+1, v.FullReason)
				}
			}
		}
		if tc.differential {
			// each rotation kept its own newest snapshot, and only that
			var b, g int
			for _, s := range snapshots(t, ioctx, stem+"-"+tc.pvc) {
				switch {
				case strings.HasPrefix(s, tc.prefix2):
					g++
				case strings.HasPrefix(s, "b-"):
					b++
				}
			}
			if b != 1 || g != 1 {
				t.Errorf("snapshots left: %v, want one %s and one %s", snapshots(t, ioctx, stem+"-"+tc.pvc), tc.prefix1, tc.prefix2)
			}
		}
	}
}
