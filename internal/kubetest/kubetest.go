// Package kubetest helps integration tests use the real kube-apiserver of the
// test environment (internal/testenv.Kube): clients, namespaces of their own,
// PVs and PVCs bound to each other the way the PV controller would bind them
// (no controllers run there), and server-side apply of manifest files.
package kubetest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/cairn-backup/cairn/internal/testenv"
)

// Env is the test API server with an admin client.
type Env struct {
	testenv.KubeEnv
	Config    *rest.Config
	Clientset kubernetes.Interface
}

// New returns the test API server, or skips/fails the test as testenv.Kube
// does.
func New(t testing.TB) *Env {
	t.Helper()
	ke := testenv.Kube(t)
	cfg, err := clientcmd.BuildConfigFromFlags("", ke.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	cfg.QPS, cfg.Burst = 200, 400          // a test server of our own: no client-side throttling
	cfg.WarningHandler = rest.NoWarnings{} // e.g. the placeholder certificates of the example Secrets
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return &Env{KubeEnv: ke, Config: cfg, Clientset: cs}
}

// Suffix returns 8 random hex digits, for names of objects of one test.
func Suffix() string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// Namespace creates the namespace name (the server is shared: give it a
// suffix). Namespaces are not deleted: without controllers a deleted one
// stays Terminating, and the server's state is thrown away after the run.
func (e *Env) Namespace(t testing.TB, name string) string {
	t.Helper()
	_, err := e.Clientset.CoreV1().Namespaces().Create(context.Background(),
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create namespace %s: %v", name, err)
	}
	return name
}

// PVC describes a PVC and its PV for BoundPVC.
type PVC struct {
	Namespace, Name string
	Labels          map[string]string
	StorageClass    string
	Size            string // resource quantity, default 1Gi
	Source          corev1.PersistentVolumeSource
	NodeAffinity    *corev1.VolumeNodeAffinity
	Pending         bool // leave both Pending instead of binding them
}

// CephRBD is the PV source ceph-csi gives an RBD volume.
func CephRBD(pool, radosNamespace, image string) corev1.PersistentVolumeSource {
	attrs := map[string]string{"clusterID": "test", "pool": pool, "imageName": image, "imageFeatures": "layering"}
	if radosNamespace != "" {
		attrs["radosNamespace"] = radosNamespace
	}
	return corev1.PersistentVolumeSource{CSI: &corev1.CSIPersistentVolumeSource{
		Driver: "rbd.csi.ceph.com", VolumeHandle: "0001-0004-test-0000000000000001-" + image,
		FSType: "ext4", VolumeAttributes: attrs}}
}

// BoundPVC creates the PV pv-NAMESPACE-NAME and the PVC, bound to each other
// (spec.claimRef with the PVC's UID, spec.volumeName, both status.phase
// Bound), and returns the PVC.
func (e *Env) BoundPVC(t testing.TB, p PVC) *corev1.PersistentVolumeClaim {
	t.Helper()
	ctx := context.Background()
	core := e.Clientset.CoreV1()
	size := resource.MustParse(cmp(p.Size, "1Gi"))
	pvName := "pv-" + p.Namespace + "-" + p.Name
	var sc *string
	if p.StorageClass != "" {
		sc = &p.StorageClass
	}
	pvc, err := core.PersistentVolumeClaims(p.Namespace).Create(ctx, &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: p.Name, Namespace: p.Namespace, Labels: p.Labels},
		Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes:      []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			Resources:        corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: size}},
			StorageClassName: sc,
			VolumeName:       pvName,
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create PVC %s/%s: %v", p.Namespace, p.Name, err)
	}
	pv, err := core.PersistentVolumes().Create(ctx, &corev1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: pvName},
		Spec: corev1.PersistentVolumeSpec{
			Capacity:                      corev1.ResourceList{corev1.ResourceStorage: size},
			AccessModes:                   []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			PersistentVolumeReclaimPolicy: corev1.PersistentVolumeReclaimRetain,
			StorageClassName:              p.StorageClass,
			PersistentVolumeSource:        p.Source,
			NodeAffinity:                  p.NodeAffinity,
			ClaimRef: &corev1.ObjectReference{Kind: "PersistentVolumeClaim", APIVersion: "v1",
				Namespace: p.Namespace, Name: p.Name, UID: pvc.UID},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create PV %s: %v", pvName, err)
	}
	if p.Pending {
		return pvc
	}
	// what the PV controller would do
	pv.Status.Phase = corev1.VolumeBound
	if _, err := core.PersistentVolumes().UpdateStatus(ctx, pv, metav1.UpdateOptions{}); err != nil {
		t.Fatalf("bind PV %s: %v", pvName, err)
	}
	pvc.Status.Phase = corev1.ClaimBound
	pvc.Status.Capacity = corev1.ResourceList{corev1.ResourceStorage: size}
	pvc.Status.AccessModes = pvc.Spec.AccessModes
	if pvc, err = core.PersistentVolumeClaims(p.Namespace).UpdateStatus(ctx, pvc, metav1.UpdateOptions{}); err != nil {
		t.Fatalf("bind PVC %s/%s: %v", p.Namespace, p.Name, err)
	}
	return pvc
}

func cmp(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// Object is one document of a manifest file.
type Object struct {
	File string // the file and the document's index, for messages
	*unstructured.Unstructured
}

func (o Object) String() string {
	return fmt.Sprintf("%s %s/%s (%s)", o.GetKind(), o.GetNamespace(), o.GetName(), o.File)
}

// ReadManifests reads the Kubernetes objects of YAML files (several
// documents each; empty documents are skipped).
func ReadManifests(files ...string) ([]Object, error) {
	var out []Object
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		d := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(b), 4096)
		for i := 0; ; i++ {
			var u unstructured.Unstructured
			err := d.Decode(&u.Object)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return nil, fmt.Errorf("%s document %d: %w", f, i, err)
			}
			if len(u.Object) == 0 {
				continue
			}
			out = append(out, Object{File: fmt.Sprintf("%s#%d", f, i), Unstructured: &u})
		}
	}
	return out, nil
}

// Applier applies objects with server-side apply.
type Applier struct {
	dyn    dynamic.Interface
	mapper meta.RESTMapper
}

// NewApplier returns an Applier for cfg.
func NewApplier(cfg *rest.Config) (*Applier, error) {
	dc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		return nil, err
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	return &Applier{dyn: dyn, mapper: restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(dc))}, nil
}

// Apply applies o with server-side apply (field manager cairn-test,
// fieldValidation=Strict), only as a dry run (dryRun=All) when dryRun is set.
// A namespaced object without a namespace goes to defaultNS.
func (a *Applier) Apply(ctx context.Context, o Object, defaultNS string, dryRun bool) error {
	gvk := o.GroupVersionKind()
	m, err := a.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	if err != nil {
		return fmt.Errorf("%s: %w", o, err)
	}
	var ri dynamic.ResourceInterface = a.dyn.Resource(m.Resource)
	if m.Scope.Name() == meta.RESTScopeNameNamespace {
		ns := o.GetNamespace()
		if ns == "" {
			ns = defaultNS
		}
		ri = a.dyn.Resource(m.Resource).Namespace(ns)
	}
	body, err := o.MarshalJSON()
	if err != nil {
		return err
	}
	opts := metav1.PatchOptions{FieldManager: "cairn-test", FieldValidation: "Strict"}
	if dryRun {
		opts.DryRun = []string{metav1.DryRunAll}
	}
	force := true
	opts.Force = &force
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if _, err := ri.Patch(ctx, o.GetName(), types.ApplyPatchType, body, opts); err != nil {
		return fmt.Errorf("%s: %w", o, err)
	}
	return nil
}

// ImpersonatingKubeconfig writes a kubeconfig that authenticates as the
// admin of e and impersonates the ServiceAccount ns/name (as kubectl --as
// does), and returns its path.
func (e *Env) ImpersonatingKubeconfig(t testing.TB, ns, name string) string {
	t.Helper()
	b, err := os.ReadFile(e.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	s := strings.Replace(string(b), "    client-key: ", "    as: system:serviceaccount:"+ns+":"+name+"\n    client-key: ", 1)
	if s == string(b) {
		t.Fatalf("%s: no client-key line to add impersonation to", e.Kubeconfig)
	}
	p := t.TempDir() + "/kubeconfig-" + ns + "-" + name
	if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// ImpersonatingConfig returns a copy of e.Config that impersonates the
// ServiceAccount ns/name.
func (e *Env) ImpersonatingConfig(ns, name string) *rest.Config {
	c := rest.CopyConfig(e.Config)
	c.Impersonate = rest.ImpersonationConfig{UserName: "system:serviceaccount:" + ns + ":" + name}
	return c
}

// WaitListPVCs waits (up to 30 s) until the ServiceAccount ns/name may list
// the PVCs of every namespace: the authorizer sees a new RoleBinding moments
// after it is created.
func (e *Env) WaitListPVCs(t testing.TB, ns, name string) {
	t.Helper()
	cs, err := kubernetes.NewForConfig(e.ImpersonatingConfig(ns, name))
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err := cs.CoreV1().PersistentVolumeClaims("").List(context.Background(), metav1.ListOptions{Limit: 1})
		if err == nil {
			return
		}
		if !apierrors.IsForbidden(err) || time.Now().After(deadline) {
			t.Fatalf("as %s/%s, list PVCs: %v", ns, name, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
