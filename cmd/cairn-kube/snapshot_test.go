package main

import (
	"context"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/cairn-backup/cairn/internal/cli"
	"github.com/cairn-backup/cairn/internal/kubetest"
	"github.com/cairn-backup/cairn/kube"
)

// TestBackupSnapshots is garage-data-zfs: a CSI VolumeSnapshot per selected
// PVC (the test plays the snapshot controller, as no controller runs on the
// test server), waited for until readyToUse and kept past the namespace
// (deletionPolicy Retain), recorded with its content in the objects
// version. After the namespace is lost, restore gives each PVC the
// recorded VolumeSnapshot as its dataSource, pre-provisioned from the
// recorded handle. A snapshot that never gets ready fails the run with its
// name and status.error. enforce deletes the snapshots of the versions it
// removes.
func TestBackupSnapshots(t *testing.T) {
	kenv := kubetest.New(t)
	kenv.InstallSnapshotCRDs(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sfx := kubetest.Suffix()
	ns := kenv.Namespace(t, "garage-"+sfx)
	class := "zfs-snap-" + sfx
	kenv.SnapshotClass(t, class, kube.DriverZFS)
	kenv.Workload(t, ns, "data-0", "data-1")
	zfs := func(handle string) kubetest.PVC {
		return kubetest.PVC{Namespace: ns, Name: handle, StorageClass: "openebs-zfs", Labels: map[string]string{"backup-strategy": "zfs-local"},
			Source: corev1ZFS(handle + "-" + sfx)}
	}
	kenv.BoundPVC(t, zfs("data-0"))
	kenv.BoundPVC(t, zfs("data-1"))
	other := zfs("meta")
	other.Labels = map[string]string{"backup-this-pvc": "true"}
	kenv.BoundPVC(t, other)
	kenv.SnapshotController(ctx, t, ns, kube.DriverZFS, map[string]bool{"broken": true})

	c := newCLI(t, kenv, true)
	s := c.backup(0, "--namespace", ns, "--selector", "backup-strategy=zfs-local", "--volumes", "snapshot",
		"--snapshot-class", class, "--label", "flow=garage-data-zfs")
	require.Len(t, s.Volumes, 2)
	assert.Equal(t, "snapshot", s.Version.Labels["k8s-volumes"])
	assert.Equal(t, "backup-strategy=zfs-local", s.Version.Labels["k8s-selector"])
	dyn := kenv.Dynamic(t)
	for _, v := range s.Volumes {
		require.True(t, v.OK(), v.Error)
		require.NotNil(t, v.Snapshot)
		assert.Equal(t, "snap-"+ns+"-"+v.Snapshot.Name, v.Snapshot.Handle)
		assert.Equal(t, kube.DriverZFS, v.Snapshot.Driver)
		assert.Equal(t, class, v.Snapshot.Class)
		vsc, err := dyn.Resource(kubetest.GVRVolumeSnapshotContents).Get(ctx, v.Snapshot.Content, metav1.GetOptions{})
		require.NoError(t, err)
		p, _, _ := unstructured.NestedString(vsc.Object, "spec", "deletionPolicy")
		assert.Equal(t, "Retain", p, "the snapshot outlives its namespace")
	}
	objs := c.archive(s.Version.ID)
	for _, p := range []string{"backup.cairn.io/v1/VolumeBackup/data-0.yaml", "snapshot.storage.k8s.io/v1/VolumeSnapshotClass/" + class + ".yaml",
		"snapshot.storage.k8s.io/v1/VolumeSnapshot/" + s.Volumes[0].Snapshot.Name + ".yaml",
		"snapshot.storage.k8s.io/v1/VolumeSnapshotContent/" + s.Volumes[0].Snapshot.Content + ".yaml",
		"apiextensions.k8s.io/v1/CustomResourceDefinition/volumesnapshots.snapshot.storage.k8s.io.yaml"} {
		assert.Contains(t, objs, p)
	}

	// the namespace is lost; its snapshots' contents stay
	kenv.DeleteNamespace(t, ns, append(kubetest.WorkloadResources, kubetest.GVRVolumeSnapshots)...)
	ns2 := "restored-" + sfx
	r := c.restore(0, s.Version.ID, "--namespace-mapping", ns+":"+ns2)
	assert.Zero(t, r.Failed)
	for _, v := range s.Volumes {
		pvc, err := kenv.Clientset.CoreV1().PersistentVolumeClaims(ns2).Get(ctx, v.PVC, metav1.GetOptions{})
		require.NoError(t, err)
		require.NotNil(t, pvc.Spec.DataSource, "PVC %s", v.PVC)
		assert.Equal(t, "VolumeSnapshot", pvc.Spec.DataSource.Kind)
		assert.Equal(t, v.Snapshot.Name, pvc.Spec.DataSource.Name)
		assert.Empty(t, pvc.Spec.VolumeName, "a new volume is provisioned from the snapshot")
		vs, err := dyn.Resource(kubetest.GVRVolumeSnapshots).Namespace(ns2).Get(ctx, v.Snapshot.Name, metav1.GetOptions{})
		require.NoError(t, err)
		content, _, _ := unstructured.NestedString(vs.Object, "spec", "source", "volumeSnapshotContentName")
		vsc, err := dyn.Resource(kubetest.GVRVolumeSnapshotContents).Get(ctx, content, metav1.GetOptions{})
		require.NoError(t, err)
		h, _, _ := unstructured.NestedString(vsc.Object, "spec", "source", "snapshotHandle")
		assert.Equal(t, v.Snapshot.Handle, h, "pre-provisioned from the recorded handle")
	}
	meta, err := kenv.Clientset.CoreV1().PersistentVolumeClaims(ns2).Get(ctx, "meta", metav1.GetOptions{})
	require.NoError(t, err)
	assert.Nil(t, meta.Spec.DataSource, "a PVC without a snapshot: as recorded")

	// a snapshot that never gets ready fails the run, named
	kenv.BoundPVC(t, kubetest.PVC{Namespace: ns2, Name: "broken", Labels: map[string]string{"backup-strategy": "zfs-local"},
		Source: corev1ZFS("broken-" + sfx)})
	kenv.SnapshotController(ctx, t, ns2, kube.DriverZFS, map[string]bool{"broken": true})
	code, out, errs := c.run("backup", "--namespace", ns2, "--selector", "backup-strategy=zfs-local", "--volumes", "snapshot",
		"--snapshot-class", class, "--snapshot-timeout", "3s")
	assert.Equal(t, cli.ExitPartial, code, out+errs)
	assert.Regexp(t, `VolumeSnapshot `+ns2+`/broken-\d{14} of PVC broken not ready after 3s: status.error: the driver failed to snapshot broken`, errs)
	list, err := dyn.Resource(kubetest.GVRVolumeSnapshots).Namespace(ns2).List(ctx, metav1.ListOptions{})
	require.NoError(t, err)
	for _, vs := range list.Items {
		assert.False(t, strings.HasPrefix(vs.GetName(), "broken-"), "the failed snapshot %s is deleted", vs.GetName())
	}

	// enforce removes the first backup, and its snapshots with it
	code, out, errs = c.run("enforce", "--keep-within", "1ns", "--volume", "k8s/"+ns)
	require.Equal(t, 0, code, out+errs)
	for _, v := range s.Volumes {
		_, err := dyn.Resource(kubetest.GVRVolumeSnapshotContents).Get(ctx, v.Snapshot.Content, metav1.GetOptions{})
		assert.True(t, apierrors.IsNotFound(err), "content %s of a removed version: %v", v.Snapshot.Content, err)
	}
	assert.NotContains(t, c.ok("ls", "--namespace", ns), s.Version.ID)
}

// corev1ZFS is the PV source of an OpenEBS ZFS LocalPV volume.
func corev1ZFS(handle string) (src corev1.PersistentVolumeSource) {
	src.CSI = &corev1.CSIPersistentVolumeSource{Driver: kube.DriverZFS, VolumeHandle: handle, VolumeAttributes: map[string]string{"poolname": "tank/k8s"}}
	return src
}
