//go:build ceph

package main

import (
	"bytes"
	"context"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/cairn-backup/cairn/internal/kubetest"
	"github.com/cairn-backup/cairn/internal/testenv"
	"github.com/cairn-backup/cairn/kube"
)

// rbdCLI runs the rbd command against the test cluster.
func rbdCLI(t *testing.T, env testenv.CephEnv, args ...string) {
	t.Helper()
	if out, err := exec.Command("rbd", append([]string{"--conf", env.Conf}, args...)...).CombinedOutput(); err != nil {
		t.Fatalf("rbd %v: %v\n%s", args, err, out)
	}
}

// rbdImage creates the image name holding 8 MiB of data (random, with a
// hole), removed with its snapshots when the test ends, and returns the data.
func rbdImage(t *testing.T, env testenv.CephEnv, name string, seed byte) []byte {
	t.Helper()
	b := make([]byte, 8<<20)
	_, _ = rand.NewChaCha8([32]byte{seed}).Read(b)
	clear(b[2<<20 : 3<<20])
	f := filepath.Join(t.TempDir(), name)
	require.NoError(t, os.WriteFile(f, b, 0o600))
	rbdCLI(t, env, "import", f, env.Pool+"/"+name)
	t.Cleanup(func() {
		_ = exec.Command("rbd", "--conf", env.Conf, "snap", "purge", env.Pool+"/"+name).Run()
		_ = exec.Command("rbd", "--conf", env.Conf, "rm", env.Pool+"/"+name).Run()
	})
	return b
}

// rbdBytes exports an image.
func rbdBytes(t *testing.T, env testenv.CephEnv, spec string) []byte {
	t.Helper()
	f := filepath.Join(t.TempDir(), "export")
	rbdCLI(t, env, "export", spec, f)
	b, err := os.ReadFile(f)
	require.NoError(t, err)
	return b
}

// TestBackupRestoreData is garage-meta-ceph end to end, against the real API
// server and the real Ceph cluster: a namespace holding a Deployment, a
// StatefulSet, a ConfigMap, a Secret, a custom resource and two PVCs on RBD
// images is backed up with --volumes data (the images as block versions,
// recorded in the objects version); the namespace and its PVs are deleted;
// restore brings the objects back and each PVC bound to a new PV whose new
// image holds the version's bytes; then again under a new name. Objects and
// bytes compare.
func TestBackupRestoreData(t *testing.T) {
	cenv := testenv.Ceph(t)
	kenv := kubetest.New(t)
	ctx := context.Background()
	sfx := kubetest.Suffix()
	ns := kenv.Namespace(t, "garage-"+sfx)
	kenv.Workload(t, ns, "meta-0", "meta-1")
	data := map[string][]byte{}
	for i, p := range []string{"meta-0", "meta-1"} {
		img := "csi-vol-" + p + "-" + sfx
		data[p] = rbdImage(t, cenv, img, byte(i+1))
		kenv.BoundPVC(t, kubetest.PVC{Namespace: ns, Name: p, StorageClass: "ceph-rbd", Size: "8Mi",
			Labels: map[string]string{"backup-this-pvc": "true"}, Source: kubetest.CephRBD(cenv.Pool, "", img)})
	}
	kenv.BoundPVC(t, kubetest.PVC{Namespace: ns, Name: "scratch", Source: kubetest.CephRBD(cenv.Pool, "", "csi-vol-unselected-"+sfx)})
	c := newCLI(t, kenv, true)
	c.env["CEPH_CONF"] = cenv.Conf
	s := c.backup(0, "--namespace", ns, "--selector", "backup-this-pvc=true", "--volumes", "data",
		"--snapshot-prefix", "garage-meta-", "--label", "flow=garage-meta-ceph", "--ceph-conf", cenv.Conf)
	require.Len(t, s.Volumes, 2)
	for _, v := range s.Volumes {
		require.True(t, v.OK(), v.Error)
		assert.NotEmpty(t, v.Version)
		assert.Equal(t, "csi-vol-"+v.PVC+"-"+sfx, v.Image.Image)
	}
	ls := c.ok("ls", "--namespace", ns, "--label", "flow=garage-meta-ceph")
	for _, v := range s.Volumes {
		assert.Contains(t, ls, v.Version, "the data version carries the run's labels")
		assert.Contains(t, ls, ns+"/"+v.PVC)
	}
	objs := c.archive(s.Version.ID)

	kenv.DeleteNamespace(t, ns, kubetest.WorkloadResources...)
	for _, p := range []string{"meta-0", "meta-1", "scratch"} {
		kenv.DeletePV(t, "pv-"+ns+"-"+p)
	}
	kc, err := kube.New(kenv.Config)
	require.NoError(t, err)
	check := func(target string) {
		t.Helper()
		r := c.restore(0, s.Version.ID, "--namespace-mapping", ns+":"+target, "--ceph-conf", cenv.Conf)
		assert.Zero(t, r.Failed)
		for _, p := range []string{"meta-0", "meta-1"} {
			pvc, err := kenv.Clientset.CoreV1().PersistentVolumeClaims(target).Get(ctx, p, metav1.GetOptions{})
			require.NoError(t, err)
			require.NotEmpty(t, pvc.Spec.VolumeName)
			// the PV controller's part: bind them
			pvc.Status.Phase = corev1.ClaimBound
			_, err = kenv.Clientset.CoreV1().PersistentVolumeClaims(target).UpdateStatus(ctx, pvc, metav1.UpdateOptions{})
			require.NoError(t, err)
			v, err := kc.Resolve(ctx, target, p)
			require.NoError(t, err)
			require.NotNil(t, v.RBD)
			assert.Equal(t, restoredImageName(target, p, recordOf(s, p).Version), v.RBD.Image)
			t.Cleanup(func() { _ = exec.Command("rbd", "--conf", cenv.Conf, "rm", v.RBD.Spec()).Run() })
			if got := rbdBytes(t, cenv, v.RBD.Spec()); !bytes.Equal(got, data[p]) {
				t.Errorf("PVC %s/%s: the restored image %s differs from the backed-up one (%d and %d bytes)", target, p, v.RBD.Spec(), len(got), len(data[p]))
			}
		}
		compareNamespace(t, kc, objs, ns, target)
	}
	check(ns)
	check("copy-" + sfx)
}

func recordOf(s backupJSON, pvc string) volumeRecord {
	for _, r := range s.Volumes {
		if r.PVC == pvc {
			return r
		}
	}
	return volumeRecord{}
}
