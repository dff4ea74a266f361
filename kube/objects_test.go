package kube_test

import (
	"bytes"
	"context"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/yaml"

	"github.com/cairn-backup/cairn/internal/kubetest"
	"github.com/cairn-backup/cairn/kube"
)

// byPath indexes objects by archive path, with the namespace renamed to
// "NS" so that exports of two namespaces compare.
func byPath(t *testing.T, objs []*unstructured.Unstructured, ns string) map[string]string {
	t.Helper()
	m := map[string]string{}
	for _, o := range objs {
		if o.GetKind() == "Service" { // a restored Service gets a new IP
			o = o.DeepCopy()
			unstructured.RemoveNestedField(o.Object, "spec", "clusterIP")
			unstructured.RemoveNestedField(o.Object, "spec", "clusterIPs")
		}
		b, err := yaml.Marshal(o.Object)
		if err != nil {
			t.Fatal(err)
		}
		m[kube.ObjectPath(o)] = strings.ReplaceAll(string(b), ns, "NS")
	}
	return m
}

func kubeGVR(group, resource string) schema.GroupVersionResource {
	return schema.GroupVersionResource{Group: group, Version: "v1", Resource: resource}
}

// TestExportRestoreRealServer exports a namespace of the real API server
// (built-in kinds, a custom resource and its CRD, a PVC with its PV and
// StorageClass), checks what was cleaned and left out, shows that the
// archive is byte-identical from one export to the next, deletes the
// namespace and restores it in dependency order, then restores it again
// under a new name, and compares the objects each time.
func TestExportRestoreRealServer(t *testing.T) {
	env := kubetest.New(t)
	ctx := context.Background()
	sfx := kubetest.Suffix()
	ns := env.Namespace(t, "garage-"+sfx)
	env.Workload(t, ns, "meta")
	env.BoundPVC(t, kubetest.PVC{Namespace: ns, Name: "meta", StorageClass: "ceph-rbd-" + sfx, Labels: map[string]string{"backup-this-pvc": "true"},
		Source: kubetest.CephRBD("rbd", "", "csi-vol-"+sfx)})
	sc := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
		"metadata": map[string]any{"name": "ceph-rbd-" + sfx}, "provisioner": kube.DriverCephRBD}}
	if _, err := env.Dynamic(t).Resource(kubeGVR("storage.k8s.io", "storageclasses")).Create(ctx, sc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	c, err := kube.New(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	ex, err := c.Export(ctx, kube.ExportOptions{Namespace: ns})
	if err != nil {
		t.Fatal(err)
	}
	if len(ex.Errors) > 0 {
		t.Fatalf("export errors: %v", ex.Errors)
	}
	paths := map[string]*unstructured.Unstructured{}
	for _, o := range ex.Objects {
		paths[kube.ObjectPath(o)] = o
		if _, ok := o.Object["status"]; ok {
			t.Errorf("%s kept its status", kube.ObjectPath(o))
		}
		for _, f := range []string{"managedFields", "resourceVersion", "uid", "creationTimestamp", "generation"} {
			if _, ok := o.Object["metadata"].(map[string]any)[f]; ok {
				t.Errorf("%s kept metadata.%s", kube.ObjectPath(o), f)
			}
		}
	}
	for _, p := range []string{
		"core/v1/Namespace/" + ns + ".yaml", "apps/v1/Deployment/garage-web.yaml", "apps/v1/StatefulSet/garage.yaml",
		"apps/v1/ReplicaSet/garage-web-5d8f.yaml", "core/v1/ConfigMap/garage-config.yaml", "core/v1/Secret/garage-rpc.yaml",
		"core/v1/Service/garage.yaml", "core/v1/Endpoints/garage.yaml", "core/v1/ServiceAccount/garage.yaml",
		"rbac.authorization.k8s.io/v1/Role/garage.yaml", "rbac.authorization.k8s.io/v1/RoleBinding/garage.yaml",
		"core/v1/PersistentVolumeClaim/meta.yaml", "core/v1/PersistentVolume/pv-" + ns + "-meta.yaml",
		"storage.k8s.io/v1/StorageClass/ceph-rbd-" + sfx + ".yaml", "cairn-test.io/v1/Widget/layout.yaml",
		"apiextensions.k8s.io/v1/CustomResourceDefinition/widgets.cairn-test.io.yaml",
	} {
		if paths[p] == nil {
			t.Errorf("export lacks %s", p)
		}
	}
	for p := range paths {
		if strings.Contains(p, "/Event/") {
			t.Errorf("export holds an event: %s", p)
		}
	}
	// the same namespace gives the same bytes
	var a1, a2 bytes.Buffer
	if err := kube.WriteArchive(&a1, ex.Objects); err != nil {
		t.Fatal(err)
	}
	ex2, err := c.Export(ctx, kube.ExportOptions{Namespace: ns})
	if err != nil {
		t.Fatal(err)
	}
	if err := kube.WriteArchive(&a2, ex2.Objects); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a1.Bytes(), a2.Bytes()) {
		t.Errorf("two exports of an unchanged namespace differ (%d and %d bytes)", a1.Len(), a2.Len())
	}
	objs, err := kube.ReadArchive(bytes.NewReader(a1.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	want := byPath(t, ex.Objects, ns)
	if got := byPath(t, objs, ns); !maps.Equal(got, want) {
		t.Fatalf("archive round trip differs")
	}
	// filters
	exf, err := c.Export(ctx, kube.ExportOptions{Namespace: ns, SkipSecrets: true,
		Kinds: kube.KindFilter{Exclude: []string{"replicasets.apps", "wd", "PersistentVolume"}}})
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range exf.Objects {
		if k := o.GetKind(); k == "Secret" || k == "ReplicaSet" || k == "Widget" || k == "PersistentVolume" {
			t.Errorf("filtered export holds %s", kube.ObjectPath(o))
		}
	}
	if exf.Count("Deployment") != 1 {
		t.Errorf("filtered export lost the Deployment")
	}

	// lose the namespace, and the PV with it
	env.DeleteNamespace(t, ns, kubetest.WorkloadResources...)
	env.DeletePV(t, "pv-"+ns+"-meta")
	outs, err := c.Restore(ctx, objs, kube.RestoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	check := func(outs []kube.Outcome, target string) {
		t.Helper()
		got := map[string]kube.Outcome{}
		for _, o := range outs {
			got[o.Kind+"/"+o.Name] = o
			if o.Action == kube.ActionFailed {
				t.Errorf("restore failed: %+v", o)
			}
		}
		for key, action := range map[string]string{
			"Namespace/" + target: kube.ActionCreated, "Deployment/garage-web": kube.ActionCreated, "StatefulSet/garage": kube.ActionCreated,
			"Secret/garage-rpc": kube.ActionCreated, "Widget/layout": kube.ActionCreated, "PersistentVolumeClaim/meta": kube.ActionCreated,
			"ReplicaSet/garage-web-5d8f": kube.ActionSkipped, "Endpoints/garage": kube.ActionSkipped,
			"CustomResourceDefinition/widgets.cairn-test.io": kube.ActionSkipped, "StorageClass/ceph-rbd-" + sfx: kube.ActionSkipped,
		} {
			if got[key].Action != action {
				t.Errorf("%s: %+v, want %s", key, got[key], action)
			}
		}
	}
	check(outs, ns)
	if i := slices.IndexFunc(outs, func(o kube.Outcome) bool { return o.Kind == "PersistentVolume" }); i < 0 || outs[i].Action != kube.ActionCreated {
		t.Errorf("the recorded PV, deleted, is not restored with its PVC: %v", outs)
	}
	// dependency order: the namespace first, the PVC before the workloads
	idx := func(kind string) int {
		return slices.IndexFunc(outs, func(o kube.Outcome) bool { return o.Kind == kind })
	}
	if !(idx("Namespace") < idx("Secret") && idx("Secret") < idx("PersistentVolumeClaim") && idx("PersistentVolumeClaim") < idx("Deployment")) {
		t.Errorf("restore order: %v", outs)
	}
	back, err := c.Export(ctx, kube.ExportOptions{Namespace: ns})
	if err != nil {
		t.Fatal(err)
	}
	got := byPath(t, back.Objects, ns)
	for p, w := range want {
		if strings.Contains(p, "/ReplicaSet/") || strings.Contains(p, "/Endpoints/") {
			continue // owned, records
		}
		if got[p] != w {
			t.Errorf("restored %s differs:\n--- backed up\n%s--- restored\n%s", p, w, got[p])
		}
	}
	// again, as a second namespace
	ns2 := "copy-" + sfx
	outs, err = c.Restore(ctx, objs, kube.RestoreOptions{NamespaceMapping: map[string]string{ns: ns2}})
	if err != nil {
		t.Fatal(err)
	}
	check(outs, ns2)
	copied, err := c.Export(ctx, kube.ExportOptions{Namespace: ns2})
	if err != nil {
		t.Fatal(err)
	}
	got2 := byPath(t, copied.Objects, ns2)
	for p, w := range want {
		if strings.Contains(p, "/ReplicaSet/") || strings.Contains(p, "/Endpoints/") || strings.Contains(p, "PersistentVolume") ||
			strings.HasPrefix(p, "core/v1/Namespace/") {
			continue
		}
		if got2[p] != w {
			t.Errorf("restored copy %s differs:\n--- backed up\n%s--- restored\n%s", p, w, got2[p])
		}
	}
	// existing objects: skipped, or updated
	outs, err = c.Restore(ctx, objs, kube.RestoreOptions{NamespaceMapping: map[string]string{ns: ns2}, Existing: kube.ExistingUpdate,
		Kinds: kube.KindFilter{Include: []string{"configmaps"}}})
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range outs {
		if o.Kind == "ConfigMap" && o.Action != kube.ActionUpdated {
			t.Errorf("--existing update: %+v", o)
		}
		if o.Kind == "Deployment" && o.Reason != "kind not included" {
			t.Errorf("--include-kinds configmaps: %+v", o)
		}
	}
}

// TestRestoreCreatesCRD: into a cluster that lacks a custom resource's CRD,
// restore creates the CRD first, waits until it is served, then the custom
// resource.
func TestRestoreCreatesCRD(t *testing.T) {
	env := kubetest.New(t)
	ctx := context.Background()
	sfx := kubetest.Suffix()
	group := "g" + sfx + ".cairn-test.io"
	crdName := "gadgets." + group
	crd := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
		"metadata": map[string]any{"name": crdName},
		"spec": map[string]any{"group": group, "scope": "Namespaced",
			"names": map[string]any{"plural": "gadgets", "singular": "gadget", "kind": "Gadget", "listKind": "GadgetList"},
			"versions": []any{map[string]any{"name": "v1", "served": true, "storage": true,
				"schema": map[string]any{"openAPIV3Schema": map[string]any{"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}}}}}
	dyn := env.Dynamic(t)
	crds := dyn.Resource(kubetest.GVRCRDs)
	if _, err := crds.Create(ctx, crd, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	env.WaitCRDs(t, crdName)
	gvr := schema.GroupVersionResource{Group: group, Version: "v1", Resource: "gadgets"}
	ns := env.Namespace(t, "crd-"+sfx)
	g := &unstructured.Unstructured{Object: map[string]any{"apiVersion": group + "/v1", "kind": "Gadget",
		"metadata": map[string]any{"name": "one", "namespace": ns}, "spec": map[string]any{"knobs": int64(11)}}}
	var err error
	for i := 0; i < 100; i++ { // served once discovery caught up
		if _, err = dyn.Resource(gvr).Namespace(ns).Create(ctx, g, metav1.CreateOptions{}); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	c, err := kube.New(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	ex, err := c.Export(ctx, kube.ExportOptions{Namespace: ns})
	if err != nil {
		t.Fatal(err)
	}
	if ex.Count("CustomResourceDefinition") != 1 || ex.Count("Gadget") != 1 {
		t.Fatalf("export: %d CRDs, %d Gadgets", ex.Count("CustomResourceDefinition"), ex.Count("Gadget"))
	}
	// lose the namespace and the CRD
	env.DeleteNamespace(t, ns, gvr)
	if err := crds.Delete(ctx, crdName, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	for i := 0; ; i++ {
		if _, err := crds.Get(ctx, crdName, metav1.GetOptions{}); apierrors.IsNotFound(err) {
			break
		}
		if i > 300 {
			t.Fatal("the CRD is not deleted")
		}
		time.Sleep(100 * time.Millisecond)
	}
	outs, err := c.Restore(ctx, ex.Objects, kube.RestoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, o := range outs {
		got[o.Kind] = o.Action + " " + o.Error
	}
	if got["CustomResourceDefinition"] != "created " || got["Gadget"] != "created " {
		t.Fatalf("outcomes %v", got)
	}
	back, err := dyn.Resource(gvr).Namespace(ns).Get(ctx, "one", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if n, _, _ := unstructured.NestedInt64(back.Object, "spec", "knobs"); n != 11 {
		t.Errorf("restored gadget: %v", back.Object)
	}
	_ = crds.Delete(ctx, crdName, metav1.DeleteOptions{})
}
