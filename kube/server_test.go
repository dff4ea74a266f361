package kube_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/cairn-backup/cairn/internal/kubetest"
	"github.com/cairn-backup/cairn/kube"
)

// TestRealServer selects and resolves PVCs on the real kube-apiserver of the
// test environment: label selectors in their three forms, namespaces, every
// supported volume kind, the per-PVC errors, and VolumeAttachments.
func TestRealServer(t *testing.T) {
	env := kubetest.New(t)
	ctx := context.Background()
	sfx := kubetest.Suffix()
	a, b := env.Namespace(t, "a-"+sfx), env.Namespace(t, "b-"+sfx)
	lbl := func(kv ...string) map[string]string {
		m := map[string]string{"t": sfx}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}
	env.BoundPVC(t, kubetest.PVC{Namespace: a, Name: "meta", Labels: lbl("backup-this-pvc", "true", "app", "garage"),
		StorageClass: "ceph-rbd", Source: kubetest.CephRBD("replicapool", "k8s", "csi-vol-meta")})
	env.BoundPVC(t, kubetest.PVC{Namespace: a, Name: "data", Labels: lbl("backup-strategy", "zfs-local", "app", "garage"),
		Source: corev1.PersistentVolumeSource{CSI: &corev1.CSIPersistentVolumeSource{Driver: kube.DriverZFS,
			VolumeHandle: "pvc-" + sfx, VolumeAttributes: map[string]string{"poolname": "tank/k8s"}}},
		NodeAffinity: &corev1.VolumeNodeAffinity{Required: &corev1.NodeSelector{NodeSelectorTerms: []corev1.NodeSelectorTerm{{
			MatchExpressions: []corev1.NodeSelectorRequirement{{Key: "openebs.io/nodeid", Operator: corev1.NodeSelectorOpIn, Values: []string{"node-a"}}}}}}}})
	env.BoundPVC(t, kubetest.PVC{Namespace: b, Name: "photos", Labels: lbl("backup-this-pvc", "true", "app", "media"),
		Source: corev1.PersistentVolumeSource{RBD: &corev1.RBDPersistentVolumeSource{CephMonitors: []string{"10.0.0.5:6789"},
			RBDImage: "kube-img", RBDPool: "kube"}}})
	env.BoundPVC(t, kubetest.PVC{Namespace: b, Name: "pending", Labels: lbl("backup-this-pvc", "true"), Pending: true,
		Source: kubetest.CephRBD("replicapool", "", "csi-vol-pending")})
	env.BoundPVC(t, kubetest.PVC{Namespace: b, Name: "nfs", Labels: lbl("backup-this-pvc", "true"),
		Source: corev1.PersistentVolumeSource{CSI: &corev1.CSIPersistentVolumeSource{Driver: "nfs.csi.k8s.io", VolumeHandle: "srv#x"}}})
	env.BoundPVC(t, kubetest.PVC{Namespace: b, Name: "host", Labels: lbl("backup-this-pvc", "true"),
		Source: corev1.PersistentVolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/srv"}}})

	c, err := kube.New(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	sel := func(s kube.Selector) map[string]kube.Volume {
		t.Helper()
		vs, err := c.Select(ctx, s)
		if err != nil {
			t.Fatalf("%+v: %v", s, err)
		}
		m := map[string]kube.Volume{}
		for _, v := range vs {
			m[v.Name()] = v
		}
		return m
	}
	names := func(m map[string]kube.Volume) string {
		var n []string
		for k := range m {
			n = append(n, k)
		}
		slices.Sort(n)
		return strings.Join(n, " ")
	}
	for _, tc := range []struct {
		s    kube.Selector
		want string
	}{
		{kube.Selector{AllNamespaces: true, Labels: "backup-this-pvc=true,t=" + sfx}, a + "/meta " + b + "/host " + b + "/nfs " + b + "/pending " + b + "/photos"},
		{kube.Selector{Namespaces: []string{a}, Labels: "backup-this-pvc=true"}, a + "/meta"},
		{kube.Selector{Namespaces: []string{a, b}, Labels: "app in (garage,media)"}, a + "/data " + a + "/meta " + b + "/photos"},
		{kube.Selector{Namespaces: []string{a}, Labels: "!backup-this-pvc"}, a + "/data"},
		{kube.Selector{Namespaces: []string{a}, Labels: "backup-strategy=zfs-local"}, a + "/data"},
	} {
		if got := names(sel(tc.s)); got != tc.want {
			t.Errorf("%+v: %s, want %s", tc.s, got, tc.want)
		}
	}
	m := sel(kube.Selector{Namespaces: []string{a, b}})
	if v := m[a+"/meta"]; v.Err != nil || v.RBD == nil || v.RBD.Spec() != "replicapool/k8s/csi-vol-meta" || v.StorageClass != "ceph-rbd" || v.PVCUID == "" {
		t.Errorf("meta: %+v", v)
	}
	if v := m[a+"/data"]; v.Err != nil || v.ZFS == nil || v.ZFS.Dataset != "tank/k8s/pvc-"+sfx || v.ZFS.Node != "node-a" {
		t.Errorf("data: %+v", v)
	}
	if v := m[b+"/photos"]; v.Err != nil || v.RBD == nil || v.RBD.Spec() != "kube/kube-img" || v.Driver != kube.DriverInTreeRBD {
		t.Errorf("photos: %+v", v)
	}
	for name, want := range map[string]error{b + "/pending": kube.ErrNotBound, b + "/nfs": kube.ErrUnsupportedDriver, b + "/host": kube.ErrNoSource} {
		if v := m[name]; !errors.Is(v.Err, want) || !strings.Contains(v.Err.Error(), "PVC "+name) {
			t.Errorf("%s: %v, want %v naming the PVC", name, v.Err, want)
		}
	}
	if err := m[b+"/nfs"].Err; !strings.Contains(err.Error(), "nfs.csi.k8s.io") {
		t.Errorf("nfs: %v does not name the driver", err)
	}
	if _, err := c.Select(ctx, kube.Selector{AllNamespaces: true, Labels: "a=(b"}); err == nil || !strings.Contains(err.Error(), `"a=(b"`) {
		t.Errorf("bad selector: %v", err)
	}

	// VolumeAttachments of the PV, attached or not.
	v, err := c.Resolve(ctx, a, "meta")
	if err != nil {
		t.Fatal(err)
	}
	if at, err := c.Attachments(ctx, v.PV); err != nil || len(at) != 0 {
		t.Fatalf("attachments before: %v, %v", at, err)
	}
	pv := v.PV
	_, err = env.Clientset.StorageV1().VolumeAttachments().Create(ctx, &storagev1.VolumeAttachment{
		ObjectMeta: metav1.ObjectMeta{Name: "csi-" + sfx},
		Spec: storagev1.VolumeAttachmentSpec{Attacher: kube.DriverCephRBD, NodeName: "node-b",
			Source: storagev1.VolumeAttachmentSource{PersistentVolumeName: &pv}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	at, err := c.Attachments(ctx, v.PV)
	if err != nil || len(at) != 1 || at[0].Node != "node-b" || at[0].Attached || at[0].Name != "csi-"+sfx {
		t.Errorf("attachments: %+v, %v", at, err)
	}
	if _, err := c.Resolve(ctx, a, "absent"); err == nil || !strings.Contains(err.Error(), a+"/absent does not exist") {
		t.Errorf("absent PVC: %v", err)
	}
}

// TestConfig: an explicit kubeconfig path, else $KUBECONFIG (outside a
// cluster); a missing file is an error naming it.
func TestConfig(t *testing.T) {
	env := kubetest.New(t)
	cfg, err := kube.Config(env.Kubeconfig)
	if err != nil || cfg.Host != env.APIServer {
		t.Fatalf("Config(%s): %v, %v", env.Kubeconfig, cfg, err)
	}
	t.Setenv("KUBERNETES_SERVICE_HOST", "") // not in a cluster
	t.Setenv("KUBECONFIG", env.Kubeconfig)
	if cfg, err := kube.Config(""); err != nil || cfg.Host != env.APIServer {
		t.Errorf("Config(\"\") with $KUBECONFIG: %v, %v", cfg, err)
	}
	if _, err := kube.Config("/nonexistent/kubeconfig"); err == nil || !strings.Contains(err.Error(), "/nonexistent/kubeconfig") {
		t.Errorf("missing kubeconfig: %v", err)
	}
	t.Setenv("KUBECONFIG", "/nonexistent/kubeconfig")
	if _, err := kube.Config(""); err == nil {
		t.Error("no kubeconfig at all: no error")
	}
}
