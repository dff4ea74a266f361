package kubetest

import (
	"context"
	"fmt"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
)

// The CSI snapshot resources of external-snapshotter's CRDs.
var (
	GVRVolumeSnapshots        = schema.GroupVersionResource{Group: "snapshot.storage.k8s.io", Version: "v1", Resource: "volumesnapshots"}
	GVRVolumeSnapshotContents = schema.GroupVersionResource{Group: "snapshot.storage.k8s.io", Version: "v1", Resource: "volumesnapshotcontents"}
	GVRVolumeSnapshotClasses  = schema.GroupVersionResource{Group: "snapshot.storage.k8s.io", Version: "v1", Resource: "volumesnapshotclasses"}
	GVRCRDs                   = schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}
)

// moduleRoot is the directory of go.mod.
func moduleRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// InstallSnapshotCRDs installs the VolumeSnapshot CRDs of external-snapshotter
// (scripts/kube/crds, as published) into the test server with server-side
// apply, and waits until they are established. Safe to call from several
// tests and packages.
func (e *Env) InstallSnapshotCRDs(t testing.TB) {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(moduleRoot(), "scripts", "kube", "crds", "snapshot.storage.k8s.io_*.yaml"))
	if err != nil || len(files) != 3 {
		t.Fatalf("scripts/kube/crds: %v %v, want the 3 snapshot CRDs", files, err)
	}
	objs, err := ReadManifests(files...)
	if err != nil {
		t.Fatal(err)
	}
	ap, err := NewApplier(e.Config)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, o := range objs {
		if err := ap.Apply(ctx, o, "", false); err != nil {
			t.Fatalf("install %v", err)
		}
	}
	e.WaitCRDs(t, "volumesnapshots.snapshot.storage.k8s.io", "volumesnapshotcontents.snapshot.storage.k8s.io",
		"volumesnapshotclasses.snapshot.storage.k8s.io")
	for i := 0; i < 600; i++ { // served
		if _, err := e.Dynamic(t).Resource(GVRVolumeSnapshotClasses).List(ctx, metav1.ListOptions{Limit: 1}); err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatal("the VolumeSnapshot CRDs are established but not served")
}

// WaitCRDs waits until the CRDs are established.
func (e *Env) WaitCRDs(t testing.TB, names ...string) {
	t.Helper()
	dyn := e.Dynamic(t)
	ctx := context.Background()
	deadline := time.Now().Add(60 * time.Second)
	for _, name := range names {
		for {
			u, err := dyn.Resource(GVRCRDs).Get(ctx, name, metav1.GetOptions{})
			if err == nil && established(u) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("CRD %s not established: %v", name, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
}

func established(u *unstructured.Unstructured) bool {
	conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
	for _, c := range conds {
		if m, _ := c.(map[string]any); m["type"] == "Established" && m["status"] == "True" {
			return true
		}
	}
	return false
}

// Dynamic returns a dynamic client of the admin.
func (e *Env) Dynamic(t testing.TB) dynamic.Interface {
	t.Helper()
	d, err := dynamic.NewForConfig(e.Config)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// SnapshotClass creates the VolumeSnapshotClass name of driver (deletion
// policy Delete) unless it exists.
func (e *Env) SnapshotClass(t testing.TB, name, driver string) {
	t.Helper()
	u := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshotClass",
		"metadata": map[string]any{"name": name}, "driver": driver, "deletionPolicy": "Delete"}}
	_, err := e.Dynamic(t).Resource(GVRVolumeSnapshotClasses).Create(context.Background(), u, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatalf("create VolumeSnapshotClass %s: %v", name, err)
	}
}

// SnapshotController plays the CSI snapshot controller and the driver's
// sidecar for the VolumeSnapshots of namespace ns, which no controller of
// the test server handles: each new VolumeSnapshot whose PVC is not in
// never gets a VolumeSnapshotContent (deletion policy Delete, handle
// "snap-NAMESPACE-NAME") and both become readyToUse; those of a PVC in never
// get status.error instead. It runs until ctx ends or the test does.
func (e *Env) SnapshotController(ctx context.Context, t testing.TB, ns, driver string, never map[string]bool) {
	dyn := e.Dynamic(t)
	ctx, cancel := context.WithCancel(ctx)
	stopped := make(chan struct{})
	t.Cleanup(func() { cancel(); <-stopped }) // no t.Logf after the test
	go func() {
		defer close(stopped)
		done := map[string]bool{}
		for ctx.Err() == nil {
			l, err := dyn.Resource(GVRVolumeSnapshots).Namespace(ns).List(ctx, metav1.ListOptions{})
			if err == nil {
				for i := range l.Items {
					vs := &l.Items[i]
					if done[string(vs.GetUID())] {
						continue
					}
					pvc, _, _ := unstructured.NestedString(vs.Object, "spec", "source", "persistentVolumeClaimName")
					if pvc == "" { // a pre-provisioned one (a restore's): bind it
						content, _, _ := unstructured.NestedString(vs.Object, "spec", "source", "volumeSnapshotContentName")
						if err := setReady(ctx, dyn, vs, content, ""); err == nil {
							done[string(vs.GetUID())] = true
						}
						continue
					}
					if never[pvc] {
						_ = unstructured.SetNestedField(vs.Object, map[string]any{"message": "the driver failed to snapshot " + pvc,
							"time": time.Now().UTC().Format(time.RFC3339)}, "status", "error")
						_ = unstructured.SetNestedField(vs.Object, false, "status", "readyToUse")
						if _, err := dyn.Resource(GVRVolumeSnapshots).Namespace(ns).UpdateStatus(ctx, vs, metav1.UpdateOptions{}); err == nil {
							done[string(vs.GetUID())] = true
						}
						continue
					}
					content := "snapcontent-" + string(vs.GetUID())
					class, _, _ := unstructured.NestedString(vs.Object, "spec", "volumeSnapshotClassName")
					vsc := &unstructured.Unstructured{Object: map[string]any{
						"apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshotContent",
						"metadata": map[string]any{"name": content},
						"spec": map[string]any{"deletionPolicy": "Delete", "driver": driver,
							"source":            map[string]any{"volumeHandle": "vol-" + ns + "-" + pvc},
							"volumeSnapshotRef": map[string]any{"namespace": ns, "name": vs.GetName(), "uid": string(vs.GetUID())}},
					}}
					if class != "" {
						_ = unstructured.SetNestedField(vsc.Object, class, "spec", "volumeSnapshotClassName")
					}
					if _, err := dyn.Resource(GVRVolumeSnapshotContents).Create(ctx, vsc, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
						t.Logf("snapshot controller: %v", err)
						continue
					}
					if err := setReady(ctx, dyn, vs, content, fmt.Sprintf("snap-%s-%s", ns, vs.GetName())); err != nil {
						t.Logf("snapshot controller: %v", err)
						continue
					}
					done[string(vs.GetUID())] = true
				}
			}
			select {
			case <-ctx.Done():
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()
}

// setReady sets the status of the content (its handle, unless "") and of
// the snapshot: bound and ready.
func setReady(ctx context.Context, dyn dynamic.Interface, vs *unstructured.Unstructured, content, handle string) error {
	vsc, err := dyn.Resource(GVRVolumeSnapshotContents).Get(ctx, content, metav1.GetOptions{})
	if err != nil {
		return err
	}
	if handle != "" {
		_ = unstructured.SetNestedField(vsc.Object, handle, "status", "snapshotHandle")
	}
	_ = unstructured.SetNestedField(vsc.Object, true, "status", "readyToUse")
	_ = unstructured.SetNestedField(vsc.Object, int64(8<<20), "status", "restoreSize")
	if _, err := dyn.Resource(GVRVolumeSnapshotContents).UpdateStatus(ctx, vsc, metav1.UpdateOptions{}); err != nil {
		return err
	}
	_ = unstructured.SetNestedField(vs.Object, content, "status", "boundVolumeSnapshotContentName")
	_ = unstructured.SetNestedField(vs.Object, true, "status", "readyToUse")
	_ = unstructured.SetNestedField(vs.Object, "8Mi", "status", "restoreSize")
	_, err = dyn.Resource(GVRVolumeSnapshots).Namespace(vs.GetNamespace()).UpdateStatus(ctx, vs, metav1.UpdateOptions{})
	return err
}

// DeleteNamespace deletes the namespace ns and plays the namespace
// controller, which the test server lacks: it deletes every object of
// the namespaced resources listed (removing their finalizers), then the
// namespace's finalizer, and waits until the namespace is gone.
func (e *Env) DeleteNamespace(t testing.TB, ns string, resources ...schema.GroupVersionResource) {
	t.Helper()
	ctx := context.Background()
	dyn := e.Dynamic(t)
	for _, gvr := range resources {
		l, err := dyn.Resource(gvr).Namespace(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatalf("list %s in %s: %v", gvr.Resource, ns, err)
		}
		for _, o := range l.Items {
			if len(o.GetFinalizers()) > 0 {
				o.SetFinalizers(nil)
				if _, err := dyn.Resource(gvr).Namespace(ns).Update(ctx, &o, metav1.UpdateOptions{}); err != nil {
					t.Fatalf("remove finalizers of %s %s/%s: %v", gvr.Resource, ns, o.GetName(), err)
				}
			}
			if err := dyn.Resource(gvr).Namespace(ns).Delete(ctx, o.GetName(), metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
				t.Fatalf("delete %s %s/%s: %v", gvr.Resource, ns, o.GetName(), err)
			}
		}
	}
	cs := e.Clientset.CoreV1().Namespaces()
	if err := cs.Delete(ctx, ns, metav1.DeleteOptions{}); err != nil {
		t.Fatalf("delete namespace %s: %v", ns, err)
	}
	n, err := cs.Get(ctx, ns, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	n.Spec.Finalizers = nil
	if _, err := cs.Finalize(ctx, n, metav1.UpdateOptions{}); err != nil {
		t.Fatalf("finalize namespace %s: %v", ns, err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := cs.Get(ctx, ns, metav1.GetOptions{}); apierrors.IsNotFound(err) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("namespace %s still exists", ns)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// DeletePV deletes the PV name, removing the protection finalizer that no
// controller of the test server would ever remove, and waits until it is
// gone.
func (e *Env) DeletePV(t testing.TB, name string) {
	t.Helper()
	ctx := context.Background()
	pvs := e.Clientset.CoreV1().PersistentVolumes()
	if err := pvs.Delete(ctx, name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		t.Fatalf("delete PV %s: %v", name, err)
	}
	for i := 0; ; i++ {
		pv, err := pvs.Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return
		}
		if err == nil && len(pv.Finalizers) > 0 {
			pv.Finalizers = nil
			_, err = pvs.Update(ctx, pv, metav1.UpdateOptions{})
		}
		if i > 300 {
			t.Fatalf("PV %s still exists: %v", name, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
