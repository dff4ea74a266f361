//go:build ceph

package main

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/cairn-backup/cairn/internal/cli"
	"github.com/cairn-backup/cairn/internal/kubetest"
	"github.com/cairn-backup/cairn/internal/testenv"
	"github.com/cairn-backup/cairn/kube"
)

// cronJob is a cairn-kube CronJob of deploy/: its ServiceAccount and the
// arguments of its backup and enforce containers.
type cronJob struct {
	sa              string
	backup, enforce []string
}

// deployCronJobs reads the cairn-kube CronJobs and RBAC of deploy/, with
// the namespaces garage and postgres renamed (the test server is shared).
func deployCronJobs(t *testing.T, rename map[string]string) (map[string]cronJob, []kubetest.Object) {
	t.Helper()
	var files []string
	for _, f := range []string{"namespace.yaml", "cairn-kube-rbac.yaml", "garage-meta-ceph.yaml", "garage-data-zfs.yaml", "postgres-objects.yaml"} {
		files = append(files, filepath.Join("..", "..", "deploy", f))
	}
	objs, err := kubetest.ReadManifests(files...)
	require.NoError(t, err)
	jobs := map[string]cronJob{}
	var rbac []kubetest.Object
	args := func(c any) []string {
		m, _ := c.([]any)[0].(map[string]any)
		var out []string
		for _, a := range m["args"].([]any) {
			s := a.(string)
			for old, nw := range rename {
				s = strings.Replace(s, "--namespace="+old, "--namespace="+nw, 1)
			}
			out = append(out, s)
		}
		return out
	}
	for _, o := range objs {
		if n, ok := rename[o.GetNamespace()]; ok {
			o.SetNamespace(n)
		}
		if o.GetKind() != "CronJob" {
			rbac = append(rbac, o)
			continue
		}
		spec, _, _ := unstructured.NestedMap(o.Object, "spec", "jobTemplate", "spec", "template", "spec")
		jobs[o.GetName()] = cronJob{sa: spec["serviceAccountName"].(string), backup: args(spec["initContainers"]), enforce: args(spec["containers"])}
	}
	return jobs, rbac
}

// TestDeployCronJobs runs the three Velero flows of deploy/ as their
// CronJobs do (the arguments of their containers, as their ServiceAccounts,
// with the RBAC of cairn-kube-rbac.yaml) against the real API server and
// Ceph: garage-meta-ceph (objects + data), garage-data-zfs (objects +
// VolumeSnapshots) and postgres-backup (objects), each followed by its
// enforce. The read-only ServiceAccount may not take snapshots.
func TestDeployCronJobs(t *testing.T) {
	cenv := testenv.Ceph(t)
	kenv := kubetest.New(t)
	kenv.InstallSnapshotCRDs(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sfx := kubetest.Suffix()
	garage, postgres := "garage-"+sfx, "postgres-"+sfx
	jobs, rbac := deployCronJobs(t, map[string]string{"garage": garage, "postgres": postgres})
	require.Len(t, jobs, 3)
	kenv.Namespace(t, garage)
	kenv.Namespace(t, postgres)
	ap, err := kubetest.NewApplier(kenv.Config)
	require.NoError(t, err)
	for _, o := range rbac {
		require.NoError(t, ap.Apply(ctx, o, "", false))
	}
	// garage: the metadata PVCs on RBD images, the data PVC on ZFS
	kenv.Workload(t, garage, "meta", "data")
	img := "csi-vol-meta-" + sfx
	meta := rbdImage(t, cenv, img, 7)
	kenv.BoundPVC(t, kubetest.PVC{Namespace: garage, Name: "meta", Size: "8Mi", Labels: map[string]string{"backup-this-pvc": "true"},
		Source: kubetest.CephRBD(cenv.Pool, "", img)})
	kenv.BoundPVC(t, kubetest.PVC{Namespace: garage, Name: "data", Labels: map[string]string{"backup-strategy": "zfs-local"},
		Source: corev1ZFS("data-" + sfx)})
	kenv.SnapshotClass(t, "zfspv-snapclass", kube.DriverZFS)
	kenv.SnapshotController(ctx, t, garage, kube.DriverZFS, nil)
	// postgres: its PVC and Pod
	kenv.BoundPVC(t, kubetest.PVC{Namespace: postgres, Name: "pgdata", Source: kubetest.CephRBD(cenv.Pool, "", "csi-vol-pg-"+sfx)})
	_, err = kenv.Clientset.CoreV1().Pods(postgres).Create(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "postgres-0"},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "postgres", Image: "postgres:15"}}}}, metav1.CreateOptions{})
	require.NoError(t, err)

	c := newCLI(t, kenv, true)
	c.env["CEPH_CONF"] = cenv.Conf
	as := func(sa string) *tcli {
		cc := *c
		cc.kubeconfig = kenv.ImpersonatingKubeconfig(t, "cairn-backup", sa)
		return &cc
	}
	// the RBAC caches catch up with the new bindings within moments
	for deadline := time.Now().Add(20 * time.Second); ; {
		kc, err := kube.NewFromConfigPath(as("cairn-kube").kubeconfig)
		require.NoError(t, err)
		_, err = kc.Export(ctx, kube.ExportOptions{Namespace: garage})
		if err == nil || !apierrors.IsForbidden(errors.Unwrap(err)) || time.Now().After(deadline) {
			require.NoError(t, err)
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	for _, name := range []string{"cairn-kube-garage-meta-ceph", "cairn-kube-garage-data-zfs", "cairn-kube-postgres-backup"} {
		j := jobs[name]
		sa := as(j.sa)
		s := sa.backup(0, append(j.backup[1:], "--ceph-conf", cenv.Conf)...)
		assert.Empty(t, s.Errors, "%s: every resource readable as %s", name, j.sa)
		switch name {
		case "cairn-kube-garage-meta-ceph":
			require.Len(t, s.Volumes, 1)
			assert.True(t, s.Volumes[0].OK(), s.Volumes[0].Error)
			assert.Equal(t, "meta", s.Volumes[0].PVC)
			assert.Equal(t, "included", s.Secrets)
			assert.Equal(t, meta, rbdBytes(t, cenv, cenv.Pool+"/"+img), "the PVC's image is untouched")
		case "cairn-kube-garage-data-zfs":
			require.Len(t, s.Volumes, 1)
			assert.True(t, s.Volumes[0].OK(), s.Volumes[0].Error)
			require.NotNil(t, s.Volumes[0].Snapshot)
		case "cairn-kube-postgres-backup":
			objs := c.archive(s.Version.ID)
			assert.Contains(t, objs, "core/v1/Pod/postgres-0.yaml")
			assert.Contains(t, objs, "core/v1/PersistentVolumeClaim/pgdata.yaml")
		}
		code, out, errs := sa.run(j.enforce...)
		assert.Equal(t, 0, code, "%s enforce: %s%s", name, out, errs)
	}
	// read-only: the objects' ServiceAccount takes no snapshot
	code, _, errs := as("cairn-kube").run("backup", "--namespace", garage, "--selector", "backup-strategy=zfs-local", "--volumes", "snapshot")
	assert.Equal(t, cli.ExitPartial, code, errs)
	assert.Contains(t, errs, "forbidden")
}
