package kube

import (
	"context"
	"errors"
	"regexp"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
)

// pair returns a PVC bound to a PV with the given source.
func pair(ns, name string, lbl map[string]string, src corev1.PersistentVolumeSource, bound bool) (*corev1.PersistentVolumeClaim, *corev1.PersistentVolume) {
	sc := "sc-" + name
	pvName := "pv-" + ns + "-" + name
	uid := types.UID("uid-" + ns + "-" + name)
	pvc := &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: lbl, UID: uid},
		Spec:       corev1.PersistentVolumeClaimSpec{VolumeName: pvName, StorageClassName: &sc},
		Status:     corev1.PersistentVolumeClaimStatus{Phase: corev1.ClaimBound},
	}
	if !bound {
		pvc.Status.Phase = corev1.ClaimPending
	}
	pv := &corev1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: pvName},
		Spec: corev1.PersistentVolumeSpec{
			Capacity:               corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")},
			PersistentVolumeSource: src,
			ClaimRef:               &corev1.ObjectReference{Namespace: ns, Name: name, UID: uid},
		},
	}
	return pvc, pv
}

func csi(driver, handle string, attrs map[string]string) corev1.PersistentVolumeSource {
	return corev1.PersistentVolumeSource{CSI: &corev1.CSIPersistentVolumeSource{Driver: driver, VolumeHandle: handle, VolumeAttributes: attrs}}
}

func fakeClient(t *testing.T) *Client {
	t.Helper()
	var objs []runtime.Object
	add := func(pvc *corev1.PersistentVolumeClaim, pv *corev1.PersistentVolume) { objs = append(objs, pvc, pv) }
	yes := map[string]string{"backup-this-pvc": "true"}
	add(pair("garage", "meta", yes, csi(DriverCephRBD, "0001-x", map[string]string{"pool": "replicapool", "imageName": "csi-vol-1", "clusterID": "c1"}), true))
	add(pair("garage", "meta-ns", yes, csi(DriverCephRBD, "0001-y", map[string]string{"pool": "replicapool", "imageName": "csi-vol-2", "radosNamespace": "k8s"}), true))
	add(pair("garage", "static", yes, csi(DriverCephRBD, "my-image", map[string]string{"pool": "p", "staticVolume": "true"}), true))
	add(pair("garage", "scratch", map[string]string{"backup-this-pvc": "false"}, csi(DriverCephRBD, "h", map[string]string{"pool": "p", "imageName": "i"}), true))
	zpvc, zpv := pair("garage", "data", map[string]string{"backup-strategy": "zfs-local"}, csi(DriverZFS, "pvc-1234", map[string]string{"poolname": "tank/k8s"}), true)
	zpv.Spec.NodeAffinity = &corev1.VolumeNodeAffinity{Required: &corev1.NodeSelector{NodeSelectorTerms: []corev1.NodeSelectorTerm{{
		MatchExpressions: []corev1.NodeSelectorRequirement{{Key: "openebs.io/nodeid", Operator: corev1.NodeSelectorOpIn, Values: []string{"node-a"}}}}}}}
	add(zpvc, zpv)
	add(pair("media", "photos", yes, corev1.PersistentVolumeSource{RBD: &corev1.RBDPersistentVolumeSource{RBDImage: "kube-img", RBDPool: "kube"}}, true))
	add(pair("media", "nfs", yes, csi("nfs.csi.k8s.io", "srv/x", nil), true))
	add(pair("media", "host", yes, corev1.PersistentVolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/x"}}, true))
	ppvc, ppv := pair("media", "pending", yes, csi(DriverCephRBD, "h", map[string]string{"pool": "p", "imageName": "i"}), false)
	ppvc.Annotations = map[string]string{"volume.kubernetes.io/storage-provisioner": DriverCephRBD}
	add(ppvc, ppv)
	add(pair("media", "noattrs", yes, csi(DriverCephRBD, "h", map[string]string{"clusterID": "c"}), true))
	// bound to a PV whose claimRef names another PVC
	spvc, _ := pair("media", "stolen", yes, csi(DriverCephRBD, "h", nil), true)
	spvc.Spec.VolumeName = "pv-garage-meta"
	objs = append(objs, spvc)
	pvName := "pv-garage-meta"
	objs = append(objs, &storagev1.VolumeAttachment{
		ObjectMeta: metav1.ObjectMeta{Name: "csi-abc"},
		Spec: storagev1.VolumeAttachmentSpec{Attacher: DriverCephRBD, NodeName: "node-b",
			Source: storagev1.VolumeAttachmentSource{PersistentVolumeName: &pvName}},
		Status: storagev1.VolumeAttachmentStatus{Attached: true},
	})
	return NewForClientset(fake.NewClientset(objs...))
}

func byName(vs []Volume) map[string]Volume {
	m := map[string]Volume{}
	for _, v := range vs {
		m[v.Name()] = v
	}
	return m
}

func TestSelectResolves(t *testing.T) {
	c := fakeClient(t)
	vs, err := c.Select(context.Background(), Selector{AllNamespaces: true, Labels: "backup-this-pvc=true"})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, v := range vs {
		names = append(names, v.Name())
	}
	want := "garage/meta garage/meta-ns garage/static media/host media/nfs media/noattrs media/pending media/photos media/stolen"
	if got := strings.Join(names, " "); got != want {
		t.Fatalf("selected %s\nwant     %s", got, want)
	}
	m := byName(vs)
	if v := m["garage/meta"]; v.Err != nil || v.RBD == nil || v.RBD.Spec() != "replicapool/csi-vol-1" || v.Driver != DriverCephRBD ||
		v.Capacity != 1<<30 || v.StorageClass != "sc-meta" || v.PV != "pv-garage-meta" || v.RBD.ClusterID != "c1" {
		t.Errorf("garage/meta: %+v %+v", v, v.RBD)
	}
	if v := m["garage/meta-ns"]; v.Err != nil || v.RBD.Spec() != "replicapool/k8s/csi-vol-2" {
		t.Errorf("garage/meta-ns: %+v", v)
	}
	if v := m["garage/static"]; v.Err != nil || v.RBD.Spec() != "p/my-image" {
		t.Errorf("garage/static: %+v", v)
	}
	if v := m["media/photos"]; v.Err != nil || v.RBD.Spec() != "kube/kube-img" || v.Driver != DriverInTreeRBD {
		t.Errorf("media/photos: %+v", v)
	}
	// Each failure names the PVC and the driver, and says why.
	for name, want := range map[string][]string{
		"media/nfs":     {"PVC media/nfs", "driver nfs.csi.k8s.io", "unsupported driver"},
		"media/host":    {"PVC media/host", "no CSI or rbd source", "hostPath"},
		"media/pending": {"PVC media/pending", "not bound", "Pending", "driver rbd.csi.ceph.com"},
		"media/noattrs": {"PVC media/noattrs", "driver rbd.csi.ceph.com", "imageName"},
		"media/stolen":  {"PVC media/stolen", "bound to claim garage/meta"},
	} {
		v := m[name]
		var ve *VolumeError
		if !errors.As(v.Err, &ve) {
			t.Errorf("%s: error %v, want a *VolumeError", name, v.Err)
			continue
		}
		for _, w := range want {
			if !strings.Contains(v.Err.Error(), w) {
				t.Errorf("%s: error %q lacks %q", name, v.Err, w)
			}
		}
	}
	if !errors.Is(m["media/nfs"].Err, ErrUnsupportedDriver) || !errors.Is(m["media/pending"].Err, ErrNotBound) {
		t.Errorf("errors.Is: %v, %v", m["media/nfs"].Err, m["media/pending"].Err)
	}
}

func TestSelectNamespacesAndSelectors(t *testing.T) {
	c := fakeClient(t)
	ctx := context.Background()
	for _, tc := range []struct {
		sel  Selector
		want string
	}{
		{Selector{Namespaces: []string{"garage"}, Labels: "backup-this-pvc=true"}, "garage/meta garage/meta-ns garage/static"},
		{Selector{Namespaces: []string{"garage"}, Labels: "backup-strategy=zfs-local"}, "garage/data"},
		{Selector{Namespaces: []string{"media", "garage", "media"}, Labels: "backup-this-pvc in (false)"}, "garage/scratch"},
		{Selector{Namespaces: []string{"garage"}, Labels: "!backup-this-pvc"}, "garage/data"},
		{Selector{Namespaces: []string{"nothing"}, Labels: "backup-this-pvc=true"}, ""},
	} {
		vs, err := c.Select(ctx, tc.sel)
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, v := range vs {
			names = append(names, v.Name())
		}
		if got := strings.Join(names, " "); got != tc.want {
			t.Errorf("%+v: %q, want %q", tc.sel, got, tc.want)
		}
	}
	vs, _ := c.Select(ctx, Selector{Namespaces: []string{"garage"}, Labels: "backup-strategy=zfs-local"})
	if v := vs[0]; v.Err != nil || v.ZFS == nil || v.ZFS.Dataset != "tank/k8s/pvc-1234" || v.ZFS.Node != "node-a" || v.RBD != nil {
		t.Errorf("zfs: %+v %+v", v, v.ZFS)
	}
	if _, err := c.Select(ctx, Selector{AllNamespaces: true, Labels: "app in (a,"}); err == nil || !strings.Contains(err.Error(), `"app in (a,"`) {
		t.Errorf("bad selector: %v", err)
	}
	if _, err := c.Select(ctx, Selector{Labels: "a=b"}); err == nil {
		t.Error("no namespace: no error")
	}
	if _, err := c.Select(ctx, Selector{AllNamespaces: true, Namespaces: []string{"x"}}); err == nil {
		t.Error("namespaces and all namespaces: no error")
	}
}

func TestResolveAndAttachments(t *testing.T) {
	c := fakeClient(t)
	ctx := context.Background()
	v, err := c.Resolve(ctx, "garage", "meta")
	if err != nil || v.RBD.Image != "csi-vol-1" {
		t.Fatalf("Resolve: %+v, %v", v, err)
	}
	if _, err := c.Resolve(ctx, "garage", "absent"); err == nil || !strings.Contains(err.Error(), "garage/absent does not exist") {
		t.Errorf("absent PVC: %v", err)
	}
	if _, err := c.Resolve(ctx, "media", "nfs"); err == nil || !strings.Contains(err.Error(), "nfs.csi.k8s.io") {
		t.Errorf("nfs PVC: %v", err)
	}
	at, err := c.Attachments(ctx, v.PV)
	if err != nil || len(at) != 1 || at[0].Node != "node-b" || !at[0].Attached {
		t.Fatalf("Attachments: %+v, %v", at, err)
	}
	if at, err := c.Attachments(ctx, "pv-garage-meta-ns"); err != nil || len(at) != 0 {
		t.Errorf("Attachments of a detached PV: %+v, %v", at, err)
	}
}

// The label keys must pass the repository's rule (blockdiff.CheckLabel,
// which kube does not import: it knows no repository).
var repoLabelKey = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._/-]{0,62}$`)

func TestLabels(t *testing.T) {
	c := fakeClient(t)
	vs, err := c.Select(context.Background(), Selector{AllNamespaces: true})
	if err != nil {
		t.Fatal(err)
	}
	m := byName(vs)
	l := m["garage/meta-ns"].Labels()
	want := map[string]string{LabelNamespace: "garage", LabelPVC: "meta-ns", LabelPVCUID: "uid-garage-meta-ns",
		LabelPV: "pv-garage-meta-ns", LabelStorageClass: "sc-meta-ns", LabelDriver: DriverCephRBD, LabelRBDImage: "replicapool/k8s/csi-vol-2"}
	if len(l) != len(want) {
		t.Errorf("labels %v, want %v", l, want)
	}
	for k, v := range want {
		if l[k] != v {
			t.Errorf("label %s = %q, want %q", k, l[k], v)
		}
	}
	if z := m["garage/data"].Labels(); z[LabelZFSDataset] != "tank/k8s/pvc-1234" || z[LabelZFSNode] != "node-a" {
		t.Errorf("zfs labels: %v", z)
	}
	for _, v := range vs {
		for k, val := range v.Labels() {
			if !repoLabelKey.MatchString(k) || len(val) > 255 {
				t.Errorf("label %q=%q breaks the repository's rules", k, val)
			}
		}
	}
}
