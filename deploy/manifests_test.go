// Package deploy_test checks the manifests of deploy/ against the real
// kube-apiserver of the test environment (scripts/testenv up kube).
package deploy_test

import (
	"context"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/kubernetes"

	"github.com/cairn-backup/cairn/internal/kubetest"
	"github.com/cairn-backup/cairn/kube"
)

// manifests returns every object of deploy/ and deploy/zrepl/ but the
// kustomize files.
func manifests(t *testing.T) []kubetest.Object {
	t.Helper()
	var files []string
	for _, g := range []string{"*.yaml", "zrepl/*.yaml"} {
		m, err := filepath.Glob(g)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, m...)
	}
	objs, err := kubetest.ReadManifests(files...)
	if err != nil {
		t.Fatal(err)
	}
	var out []kubetest.Object
	for _, o := range objs {
		if o.GetKind() != "Kustomization" {
			out = append(out, o)
		}
	}
	if len(out) < 10 {
		t.Fatalf("only %d objects in %v", len(out), files)
	}
	return out
}

// TestManifestsServerSideDryRun applies every manifest of deploy/ to the real
// API server with server-side apply, dryRun=All and fieldValidation=Strict
// (the namespaces are created for real first: a dry run in a missing
// namespace fails), and shows that a bad schedule or an unknown field in a
// CronJob fails the same check.
func TestManifestsServerSideDryRun(t *testing.T) {
	env := kubetest.New(t)
	ctx := context.Background()
	ap, err := kubetest.NewApplier(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	objs := manifests(t)
	for _, o := range objs {
		if o.GetKind() == "Namespace" {
			if err := ap.Apply(ctx, o, "", false); err != nil {
				t.Fatal(err)
			}
		}
	}
	// the applications' namespaces that RoleBindings go to (cairn-kube-rbac.yaml)
	for _, o := range objs {
		if ns := o.GetNamespace(); ns != "" && ns != "cairn-backup" {
			_, err := env.Clientset.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
			if err != nil && !apierrors.IsAlreadyExists(err) {
				t.Fatal(err)
			}
		}
	}
	var cronjob *unstructured.Unstructured
	for _, o := range objs {
		if err := ap.Apply(ctx, o, "default", true); err != nil {
			t.Errorf("server-side apply (dry run, strict): %v", err)
		}
		if o.GetKind() == "CronJob" && o.GetName() == "cairn-block-backup-all" {
			cronjob = o.Unstructured
		}
	}
	if cronjob == nil {
		t.Fatal("no CronJob cairn-block-backup-all in deploy/")
	}
	// The same check refuses mistakes.
	bad := cronjob.DeepCopy()
	if err := unstructured.SetNestedField(bad.Object, "61 7 * * *", "spec", "schedule"); err != nil {
		t.Fatal(err)
	}
	err = ap.Apply(ctx, kubetest.Object{File: "bad schedule", Unstructured: bad}, "", true)
	if !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), "schedule") {
		t.Errorf("a CronJob with schedule 61 7 * * *: %v, want Invalid naming the schedule", err)
	}
	bad = cronjob.DeepCopy()
	if err := unstructured.SetNestedField(bad.Object, int64(7), "spec", "retentionDays"); err != nil {
		t.Fatal(err)
	}
	err = ap.Apply(ctx, kubetest.Object{File: "unknown field", Unstructured: bad}, "", true)
	if err == nil || !strings.Contains(err.Error(), "retentionDays") {
		t.Errorf("a CronJob with an unknown field: %v, want an error naming it", err)
	}
	// Dry run: nothing was created.
	if _, err := env.Clientset.BatchV1().CronJobs("cairn-backup").Get(ctx, "cairn-block-backup-all", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("after a dry run, GET of the CronJob: %v, want NotFound", err)
	}
}

// TestCronJobsSelectByLabel: the CronJobs that back up PVCs select them as
// the seed's flows do, run as the ServiceAccount of rbac.yaml, and each has a
// snapshot prefix of its own.
func TestCronJobsSelectByLabel(t *testing.T) {
	want := map[string][]string{ // CronJob -> arguments it must have
		"cairn-block-backup-all":      {"backup-all", "--selector=backup-this-pvc=true", "--all-namespaces", "--snapshot-prefix=b-"},
		"cairn-kube-garage-meta-ceph": {"backup", "--selector=backup-this-pvc=true", "--namespace=garage", "--volumes=data", "--snapshot-prefix=garage-meta-"},
	}
	accounts := map[string]string{"cairn-block-backup-all": "cairn-block", "cairn-kube-garage-meta-ceph": "cairn-kube"}
	prefixes := map[string]string{}
	for _, o := range manifests(t) {
		w, ok := want[o.GetName()]
		if o.GetKind() != "CronJob" || !ok {
			continue
		}
		delete(want, o.GetName())
		spec, _, _ := unstructured.NestedMap(o.Object, "spec", "jobTemplate", "spec", "template", "spec")
		if sa, _ := spec["serviceAccountName"].(string); sa != accounts[o.GetName()] {
			t.Errorf("%s: serviceAccountName %q, want %s", o, sa, accounts[o.GetName()])
		}
		cs, _ := spec["initContainers"].([]any) // cairn-kube: the backup, then the enforce
		if len(cs) == 0 {
			cs, _ = spec["containers"].([]any)
		}
		c, _ := cs[0].(map[string]any)
		var args []string
		for _, a := range c["args"].([]any) {
			args = append(args, a.(string))
			if p, ok := strings.CutPrefix(a.(string), "--snapshot-prefix="); ok {
				if other, dup := prefixes[p]; dup {
					t.Errorf("%s and %s share the snapshot prefix %q", o.GetName(), other, p)
				}
				prefixes[p] = o.GetName()
			}
		}
		for _, a := range w {
			if !slices.Contains(args, a) {
				t.Errorf("%s: args %v lack %s", o, args, a)
			}
		}
	}
	for name := range want {
		t.Errorf("no CronJob %s in deploy/", name)
	}
}

// TestRBACLeastRights applies rbac.yaml for real and, as the CronJobs'
// ServiceAccount (impersonated), selects PVCs in every namespace, resolves
// one and lists VolumeAttachments: enough. Everything else it might try is
// refused: no wider.
func TestRBACLeastRights(t *testing.T) {
	env := kubetest.New(t)
	ctx := context.Background()
	ap, err := kubetest.NewApplier(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	objs, err := kubetest.ReadManifests("namespace.yaml", "rbac.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range objs {
		if err := ap.Apply(ctx, o, "", false); err != nil {
			t.Fatal(err)
		}
	}
	ns := env.Namespace(t, "rbac-"+kubetest.Suffix())
	env.BoundPVC(t, kubetest.PVC{Namespace: ns, Name: "data", Labels: map[string]string{"backup-this-pvc": "true"},
		Source: kubetest.CephRBD("rbd", "", "csi-vol-rbac")})

	sa := env.ImpersonatingConfig("cairn-backup", "cairn-block")
	kc, err := kube.New(sa)
	if err != nil {
		t.Fatal(err)
	}
	env.WaitListPVCs(t, "cairn-backup", "cairn-block") // the authorizer sees the new binding within moments
	vols, err := kc.Select(ctx, kube.Selector{AllNamespaces: true, Labels: "backup-this-pvc=true"})
	if err != nil {
		t.Fatalf("select as the ServiceAccount: %v", err)
	}
	found := false
	for _, v := range vols {
		if v.Name() == ns+"/data" {
			found = v.Err == nil && v.RBD != nil && v.RBD.Image == "csi-vol-rbac"
		}
	}
	if !found {
		t.Errorf("as the ServiceAccount, %s/data is not selected and resolved: %+v", ns, vols)
	}
	if _, err := kc.Select(ctx, kube.Selector{Namespaces: []string{ns}, Labels: "backup-this-pvc=true"}); err != nil {
		t.Errorf("select in one namespace: %v", err)
	}
	v, err := kc.Resolve(ctx, ns, "data")
	if err != nil {
		t.Fatalf("resolve as the ServiceAccount: %v", err)
	}
	if _, err := kc.Attachments(ctx, v.PV); err != nil {
		t.Errorf("VolumeAttachments as the ServiceAccount: %v", err)
	}

	// No wider.
	cs, err := kubernetes.NewForConfig(sa)
	if err != nil {
		t.Fatal(err)
	}
	core := cs.CoreV1()
	for what, try := range map[string]func() error{
		"list PVs": func() error { _, err := core.PersistentVolumes().List(ctx, metav1.ListOptions{}); return err },
		"watch PVCs": func() error {
			w, err := core.PersistentVolumeClaims(ns).Watch(ctx, metav1.ListOptions{})
			if err == nil {
				w.Stop()
			}
			return err
		},
		"delete a PVC": func() error { return core.PersistentVolumeClaims(ns).Delete(ctx, "data", metav1.DeleteOptions{}) },
		"update a PVC": func() error {
			p, err := env.Clientset.CoreV1().PersistentVolumeClaims(ns).Get(ctx, "data", metav1.GetOptions{})
			if err != nil {
				return err
			}
			p.Labels["x"] = "y"
			_, err = core.PersistentVolumeClaims(ns).Update(ctx, p, metav1.UpdateOptions{})
			return err
		},
		"create a PVC": func() error {
			_, err := core.PersistentVolumeClaims(ns).Create(ctx, &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Name: "x"}}, metav1.CreateOptions{})
			return err
		},
		"delete a PV":  func() error { return core.PersistentVolumes().Delete(ctx, v.PV, metav1.DeleteOptions{}) },
		"list Secrets": func() error { _, err := core.Secrets("cairn-backup").List(ctx, metav1.ListOptions{}); return err },
		"get a Secret": func() error {
			_, err := core.Secrets("cairn-backup").Get(ctx, "cairn-repo-password", metav1.GetOptions{})
			return err
		},
		"list Pods":       func() error { _, err := core.Pods(ns).List(ctx, metav1.ListOptions{}); return err },
		"list ConfigMaps": func() error { _, err := core.ConfigMaps("cairn-backup").List(ctx, metav1.ListOptions{}); return err },
		"list Namespaces": func() error { _, err := core.Namespaces().List(ctx, metav1.ListOptions{}); return err },
		"get a VolumeAttachment": func() error {
			_, err := cs.StorageV1().VolumeAttachments().Get(ctx, "x", metav1.GetOptions{})
			return err
		},
		"list ClusterRoles": func() error {
			_, err := cs.RbacV1().ClusterRoles().List(ctx, metav1.ListOptions{})
			return err
		},
	} {
		if err := try(); !apierrors.IsForbidden(err) {
			t.Errorf("as the ServiceAccount, %s: %v, want Forbidden", what, err)
		}
	}
}
