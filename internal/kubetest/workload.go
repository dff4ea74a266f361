package kubetest

import (
	"context"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// GVRWidgets is the custom resource of WidgetCRD.
var GVRWidgets = schema.GroupVersionResource{Group: "cairn-test.io", Version: "v1", Resource: "widgets"}

// WidgetCRD installs the CRD widgets.cairn-test.io (namespaced, kind
// Widget, a spec with size and color) unless it exists, and waits until it
// is served.
func (e *Env) WidgetCRD(t testing.TB) {
	t.Helper()
	crd := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
		"metadata": map[string]any{"name": "widgets.cairn-test.io"},
		"spec": map[string]any{
			"group": "cairn-test.io", "scope": "Namespaced",
			"names": map[string]any{"plural": "widgets", "singular": "widget", "kind": "Widget", "listKind": "WidgetList", "shortNames": []any{"wd"}},
			"versions": []any{map[string]any{"name": "v1", "served": true, "storage": true,
				"schema": map[string]any{"openAPIV3Schema": map[string]any{"type": "object", "properties": map[string]any{
					"spec": map[string]any{"type": "object", "properties": map[string]any{
						"size": map[string]any{"type": "integer"}, "color": map[string]any{"type": "string"}}},
					"status": map[string]any{"type": "object", "x-kubernetes-preserve-unknown-fields": true},
				}}},
				"subresources": map[string]any{"status": map[string]any{}},
			}},
		},
	}}
	_, err := e.Dynamic(t).Resource(GVRCRDs).Create(context.Background(), crd, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatalf("create CRD widgets.cairn-test.io: %v", err)
	}
	e.WaitCRDs(t, "widgets.cairn-test.io")
	for i := 0; i < 100; i++ { // served
		if _, err := e.Dynamic(t).Resource(GVRWidgets).List(context.Background(), metav1.ListOptions{Limit: 1}); err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Workload fills namespace ns with what the backup tests expect of an
// application: a ServiceAccount, a Role and its RoleBinding, a ConfigMap,
// a Secret, a Service, a Deployment with a ReplicaSet it owns, a
// StatefulSet, Endpoints and a Widget (WidgetCRD). Volumes are the test's:
// the StatefulSet and the Deployment mount the PVCs named in pvcs.
func (e *Env) Workload(t testing.TB, ns string, pvcs ...string) {
	t.Helper()
	ctx := context.Background()
	cs := e.Clientset
	fail := func(what string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("create %s in %s: %v", what, ns, err)
		}
	}
	lbl := map[string]string{"app": "garage"}
	var err error
	_, err = cs.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "garage"}}, metav1.CreateOptions{})
	fail("ServiceAccount", err)
	_, err = cs.RbacV1().Roles(ns).Create(ctx, &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: "garage"},
		Rules: []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"configmaps"}, Verbs: []string{"get"}}}}, metav1.CreateOptions{})
	fail("Role", err)
	_, err = cs.RbacV1().RoleBindings(ns).Create(ctx, &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "garage"},
		RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: "garage"},
		Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Name: "garage", Namespace: ns}}}, metav1.CreateOptions{})
	fail("RoleBinding", err)
	_, err = cs.CoreV1().ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "garage-config", Labels: lbl},
		Data: map[string]string{"garage.toml": "replication_mode = \"1\"\nmetadata_dir = \"/meta\"\n"}}, metav1.CreateOptions{})
	fail("ConfigMap", err)
	_, err = cs.CoreV1().Secrets(ns).Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "garage-rpc", Labels: lbl},
		Data: map[string][]byte{"rpc-secret": []byte("s3cr3t-rpc-" + ns)}}, metav1.CreateOptions{})
	fail("Secret", err)
	_, err = cs.CoreV1().Services(ns).Create(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "garage", Labels: lbl},
		Spec: corev1.ServiceSpec{Selector: lbl, Ports: []corev1.ServicePort{{Name: "s3", Port: 3900, TargetPort: intstr.FromInt32(3900)}}}}, metav1.CreateOptions{})
	fail("Service", err)
	ep := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "v1", "kind": "Endpoints", // what a cluster has
		"metadata": map[string]any{"name": "garage", "namespace": ns},
		"subsets":  []any{map[string]any{"addresses": []any{map[string]any{"ip": "10.1.2.3"}}, "ports": []any{map[string]any{"name": "s3", "port": int64(3900)}}}}}}
	_, err = e.Dynamic(t).Resource(schema.GroupVersionResource{Version: "v1", Resource: "endpoints"}).Namespace(ns).Create(ctx, ep, metav1.CreateOptions{})
	fail("Endpoints", err)
	var vols []corev1.Volume
	var mounts []corev1.VolumeMount
	for _, p := range pvcs {
		vols = append(vols, corev1.Volume{Name: p, VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: p}}})
		mounts = append(mounts, corev1.VolumeMount{Name: p, MountPath: "/" + p})
	}
	tmpl := corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: lbl}, Spec: corev1.PodSpec{
		ServiceAccountName: "garage", Volumes: vols,
		Containers: []corev1.Container{{Name: "garage", Image: "dxflrs/garage:v1.0.1", VolumeMounts: mounts,
			EnvFrom: []corev1.EnvFromSource{{SecretRef: &corev1.SecretEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "garage-rpc"}}}}}}}}
	one := int32(1)
	dep, err := cs.AppsV1().Deployments(ns).Create(ctx, &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "garage-web", Labels: lbl},
		Spec: appsv1.DeploymentSpec{Replicas: &one, Selector: &metav1.LabelSelector{MatchLabels: lbl}, Template: tmpl}}, metav1.CreateOptions{})
	fail("Deployment", err)
	ctrl := true
	_, err = cs.AppsV1().ReplicaSets(ns).Create(ctx, &appsv1.ReplicaSet{ObjectMeta: metav1.ObjectMeta{Name: "garage-web-5d8f", Labels: lbl,
		OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "Deployment", Name: dep.Name, UID: dep.UID, Controller: &ctrl}}},
		Spec: appsv1.ReplicaSetSpec{Replicas: &one, Selector: &metav1.LabelSelector{MatchLabels: lbl}, Template: tmpl}}, metav1.CreateOptions{})
	fail("ReplicaSet", err)
	sts := tmpl.DeepCopy()
	sts.Labels = map[string]string{"app": "garage-sts"}
	_, err = cs.AppsV1().StatefulSets(ns).Create(ctx, &appsv1.StatefulSet{ObjectMeta: metav1.ObjectMeta{Name: "garage", Labels: lbl},
		Spec: appsv1.StatefulSetSpec{Replicas: &one, ServiceName: "garage", Selector: &metav1.LabelSelector{MatchLabels: sts.Labels}, Template: *sts}},
		metav1.CreateOptions{})
	fail("StatefulSet", err)
	e.WidgetCRD(t)
	w := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "cairn-test.io/v1", "kind": "Widget",
		"metadata": map[string]any{"name": "layout", "namespace": ns}, "spec": map[string]any{"size": int64(3), "color": "teal"}}}
	_, err = e.Dynamic(t).Resource(GVRWidgets).Namespace(ns).Create(ctx, w, metav1.CreateOptions{})
	fail("Widget", err)
}

// WorkloadResources are the namespaced resources Workload and BoundPVC
// create, for DeleteNamespace.
var WorkloadResources = []schema.GroupVersionResource{
	{Group: "apps", Version: "v1", Resource: "deployments"},
	{Group: "apps", Version: "v1", Resource: "replicasets"},
	{Group: "apps", Version: "v1", Resource: "statefulsets"},
	{Version: "v1", Resource: "services"},
	{Version: "v1", Resource: "endpoints"},
	{Group: "discovery.k8s.io", Version: "v1", Resource: "endpointslices"},
	{Version: "v1", Resource: "configmaps"},
	{Version: "v1", Resource: "secrets"},
	{Version: "v1", Resource: "serviceaccounts"},
	{Group: "rbac.authorization.k8s.io", Version: "v1", Resource: "roles"},
	{Group: "rbac.authorization.k8s.io", Version: "v1", Resource: "rolebindings"},
	{Version: "v1", Resource: "persistentvolumeclaims"},
	{Version: "v1", Resource: "pods"},
	GVRWidgets,
}
