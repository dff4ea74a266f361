package kube

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// Drivers that Resolve understands.
const (
	DriverCephRBD   = "rbd.csi.ceph.com"   // ceph-csi RBD
	DriverZFS       = "zfs.csi.openebs.io" // OpenEBS ZFS LocalPV
	DriverInTreeRBD = "kubernetes.io/rbd"  // the in-tree rbd PV source (no CSI)
)

// Labels that Volume.Labels sets. The keys follow the repository's label
// rules (letters, digits, '.', '_', '/', '-'; at most 63 bytes).
const (
	LabelNamespace    = "k8s-namespace"     // the PVC's namespace
	LabelPVC          = "k8s-pvc"           // the PVC's name
	LabelPVCUID       = "k8s-pvc-uid"       // the PVC's UID (a recreated PVC has a new one)
	LabelPV           = "k8s-pv"            // the bound PV's name
	LabelStorageClass = "k8s-storage-class" // the PVC's storage class ("" when none)
	LabelDriver       = "k8s-driver"        // the CSI driver, or kubernetes.io/rbd
	LabelRBDImage     = "k8s-rbd-image"     // POOL/IMAGE or POOL/NAMESPACE/IMAGE
	LabelZFSDataset   = "k8s-zfs-dataset"   // POOL/.../DATASET
	LabelZFSNode      = "k8s-zfs-node"      // the node the dataset lives on
)

// RBDImage is an RBD image behind a PV.
type RBDImage struct {
	Pool      string
	Namespace string // the RADOS namespace in the pool; "" for the default
	Image     string
	ClusterID string // ceph-csi's clusterID attribute, when set
}

// Spec returns the image as the rbd command names it: POOL/IMAGE or
// POOL/NAMESPACE/IMAGE.
func (r RBDImage) Spec() string {
	if r.Namespace != "" {
		return r.Pool + "/" + r.Namespace + "/" + r.Image
	}
	return r.Pool + "/" + r.Image
}

// ZFSDataset is an OpenEBS ZFS LocalPV dataset behind a PV.
type ZFSDataset struct {
	Dataset string // POOLNAME/VOLUMEHANDLE
	Node    string // from the PV's node affinity; "" when it names none
}

// Volume is one selected PVC and, when Err is nil, the volume behind it:
// exactly one of RBD and ZFS is set.
type Volume struct {
	Namespace    string
	PVC          string
	PVCUID       string
	PV           string // "" when the PVC is not bound
	StorageClass string
	Driver       string // the PV's CSI driver, DriverInTreeRBD, or "" when unknown
	Capacity     int64  // the PV's capacity in bytes (0 when it states none)

	RBD *RBDImage
	ZFS *ZFSDataset

	// Err says why the PVC cannot be backed up; it is a *VolumeError.
	Err error
}

// Name returns NAMESPACE/PVC, the volume's name in a repository.
func (v Volume) Name() string { return v.Namespace + "/" + v.PVC }

// Labels returns the labels a backup of the volume carries.
func (v Volume) Labels() map[string]string {
	m := map[string]string{
		LabelNamespace: v.Namespace,
		LabelPVC:       v.PVC,
		LabelPVCUID:    v.PVCUID,
		LabelPV:        v.PV,
		LabelDriver:    v.Driver,
	}
	if v.StorageClass != "" {
		m[LabelStorageClass] = v.StorageClass
	}
	if v.RBD != nil {
		m[LabelRBDImage] = v.RBD.Spec()
	}
	if v.ZFS != nil {
		m[LabelZFSDataset] = v.ZFS.Dataset
		if v.ZFS.Node != "" {
			m[LabelZFSNode] = v.ZFS.Node
		}
	}
	for k, val := range m {
		if val == "" {
			delete(m, k)
		}
	}
	return m
}

// VolumeError is why one PVC cannot be backed up or restored into.
type VolumeError struct {
	Namespace, PVC string
	PV             string // "" when unbound
	Driver         string // the PV's driver; for an unbound PVC its provisioner, when known
	Err            error
}

func (e *VolumeError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "kube: PVC %s/%s", e.Namespace, e.PVC)
	var in []string
	if e.PV != "" {
		in = append(in, "PV "+e.PV)
	}
	if e.Driver != "" {
		in = append(in, "driver "+e.Driver)
	}
	if len(in) > 0 {
		fmt.Fprintf(&b, " (%s)", strings.Join(in, ", "))
	}
	b.WriteString(": ")
	b.WriteString(e.Err.Error())
	return b.String()
}

func (e *VolumeError) Unwrap() error { return e.Err }

// Errors that VolumeError wraps.
var (
	ErrNotBound          = errors.New("not bound to a PV")
	ErrUnsupportedDriver = errors.New("unsupported driver")
	ErrNoSource          = errors.New("the PV has no CSI or rbd source")
	ErrBadAttributes     = errors.New("the PV's volume attributes do not name the volume")
)

// Selector chooses PVCs: by namespaces (or all of them) and a label selector
// in Kubernetes syntax ("backup-this-pvc=true", "app in (a,b)", "!x").
type Selector struct {
	Namespaces    []string // at least one unless AllNamespaces
	AllNamespaces bool
	Labels        string // "" selects every PVC of the namespaces
}

// ParseLabelSelector parses a label selector in Kubernetes syntax; the error
// names the selector.
func ParseLabelSelector(s string) (labels.Selector, error) {
	sel, err := labels.Parse(s)
	if err != nil {
		return nil, fmt.Errorf("kube: bad label selector %q: %w", s, err)
	}
	return sel, nil
}

// Select lists the PVCs that sel chooses, sorted by namespace and name, and
// resolves each to its volume. A PVC that cannot be resolved has Volume.Err
// set and the others go on; the error is for what stops the whole selection:
// a bad selector, or the API server refusing or failing a list.
func (c *Client) Select(ctx context.Context, sel Selector) ([]Volume, error) {
	ls, err := ParseLabelSelector(sel.Labels)
	if err != nil {
		return nil, err
	}
	nss := slices.Clone(sel.Namespaces)
	switch {
	case sel.AllNamespaces && len(nss) > 0:
		return nil, errors.New("kube: select PVCs: namespaces given with all namespaces")
	case sel.AllNamespaces:
		nss = []string{metav1.NamespaceAll}
	case len(nss) == 0:
		return nil, errors.New("kube: select PVCs: no namespace (name some, or all)")
	}
	slices.Sort(nss)
	nss = slices.Compact(nss)
	var pvcs []corev1.PersistentVolumeClaim
	for _, ns := range nss {
		list, err := c.cs.CoreV1().PersistentVolumeClaims(ns).List(ctx, metav1.ListOptions{LabelSelector: ls.String()})
		if err != nil {
			where := "namespace " + ns
			if ns == metav1.NamespaceAll {
				where = "all namespaces"
			}
			return nil, fmt.Errorf("kube: listing the PVCs of %s with selector %q: %w", where, sel.Labels, err)
		}
		pvcs = append(pvcs, list.Items...)
	}
	slices.SortFunc(pvcs, func(a, b corev1.PersistentVolumeClaim) int {
		return strings.Compare(a.Namespace+"/"+a.Name, b.Namespace+"/"+b.Name)
	})
	out := make([]Volume, 0, len(pvcs))
	for i := range pvcs {
		v, err := c.resolve(ctx, &pvcs[i])
		if err != nil && v.Err == nil { // an API failure, not the PVC's fault: still one PVC's error
			v.Err = &VolumeError{Namespace: v.Namespace, PVC: v.PVC, PV: v.PV, Err: err}
		}
		out = append(out, v)
	}
	return out, nil
}

// Resolve resolves one PVC to its volume. The error is a *VolumeError when the
// PVC exists but cannot be resolved (then it is also in Volume.Err), and an
// API error otherwise (the PVC does not exist, access refused).
func (c *Client) Resolve(ctx context.Context, namespace, pvc string) (Volume, error) {
	p, err := c.cs.CoreV1().PersistentVolumeClaims(namespace).Get(ctx, pvc, metav1.GetOptions{})
	if err != nil {
		if apierrors.IsNotFound(err) {
			return Volume{Namespace: namespace, PVC: pvc}, fmt.Errorf("kube: PVC %s/%s does not exist: %w", namespace, pvc, err)
		}
		return Volume{Namespace: namespace, PVC: pvc}, fmt.Errorf("kube: reading PVC %s/%s: %w", namespace, pvc, err)
	}
	v, err := c.resolve(ctx, p)
	if err == nil && v.Err != nil {
		err = v.Err
	}
	return v, err
}

// resolve fills in the volume of pvc. Problems of the PVC are in Volume.Err;
// the error is for a failure to read its PV.
func (c *Client) resolve(ctx context.Context, pvc *corev1.PersistentVolumeClaim) (Volume, error) {
	v := Volume{Namespace: pvc.Namespace, PVC: pvc.Name, PVCUID: string(pvc.UID), PV: pvc.Spec.VolumeName}
	if pvc.Spec.StorageClassName != nil {
		v.StorageClass = *pvc.Spec.StorageClassName
	}
	fail := func(err error) (Volume, error) {
		v.Err = &VolumeError{Namespace: v.Namespace, PVC: v.PVC, PV: v.PV, Driver: v.Driver, Err: err}
		return v, nil
	}
	if pvc.Status.Phase != corev1.ClaimBound || pvc.Spec.VolumeName == "" {
		v.Driver = provisioner(pvc) // what would provision it, for the message
		phase := pvc.Status.Phase
		if phase == "" {
			phase = corev1.ClaimPending
		}
		return fail(fmt.Errorf("%w (phase %s)", ErrNotBound, phase))
	}
	pv, err := c.cs.CoreV1().PersistentVolumes().Get(ctx, pvc.Spec.VolumeName, metav1.GetOptions{})
	if err != nil {
		return v, fmt.Errorf("reading PV %s: %w", pvc.Spec.VolumeName, err)
	}
	if ref := pv.Spec.ClaimRef; ref == nil || ref.Namespace != pvc.Namespace || ref.Name != pvc.Name ||
		(ref.UID != "" && ref.UID != pvc.UID) {
		who := "no claim"
		if ref != nil {
			who = "claim " + ref.Namespace + "/" + ref.Name
		}
		return fail(fmt.Errorf("%w: the PV is bound to %s", ErrNotBound, who))
	}
	if q, ok := pv.Spec.Capacity[corev1.ResourceStorage]; ok {
		v.Capacity = q.Value()
	}
	switch {
	case pv.Spec.CSI != nil:
		v.Driver = pv.Spec.CSI.Driver
		switch v.Driver {
		case DriverCephRBD:
			img, err := cephCSIImage(pv.Spec.CSI)
			if err != nil {
				return fail(err)
			}
			v.RBD = img
		case DriverZFS:
			ds, err := zfsDataset(pv)
			if err != nil {
				return fail(err)
			}
			v.ZFS = ds
		default:
			return fail(fmt.Errorf("%w %q (want %s or %s)", ErrUnsupportedDriver, v.Driver, DriverCephRBD, DriverZFS))
		}
	case pv.Spec.RBD != nil:
		v.Driver = DriverInTreeRBD
		r := pv.Spec.RBD
		pool := r.RBDPool
		if pool == "" {
			pool = "rbd" // the in-tree plugin's default
		}
		if r.RBDImage == "" {
			return fail(fmt.Errorf("%w: the rbd source has no image", ErrBadAttributes))
		}
		v.RBD = &RBDImage{Pool: pool, Image: r.RBDImage}
	default:
		return fail(fmt.Errorf("%w (a %s volume)", ErrNoSource, sourceKind(pv)))
	}
	return v, nil
}

// cephCSIImage reads the image of a ceph-csi RBD volume: pool, imageName and
// radosNamespace; a static volume (staticVolume "true") is named by its
// volume handle.
func cephCSIImage(src *corev1.CSIPersistentVolumeSource) (*RBDImage, error) {
	a := src.VolumeAttributes
	img := &RBDImage{Pool: a["pool"], Image: a["imageName"], Namespace: a["radosNamespace"], ClusterID: a["clusterID"]}
	if img.Image == "" && a["staticVolume"] == "true" {
		img.Image = src.VolumeHandle
	}
	if img.Pool == "" || img.Image == "" {
		return nil, fmt.Errorf("%w: want attributes pool and imageName (have pool %q, imageName %q)",
			ErrBadAttributes, a["pool"], a["imageName"])
	}
	return img, nil
}

// Node affinity keys that name the node of a ZFS LocalPV, in order of
// preference.
var zfsNodeKeys = []string{"openebs.io/nodeid", "openebs.io/nodename", "kubernetes.io/hostname"}

// zfsDataset reads the dataset and node of an OpenEBS ZFS LocalPV.
func zfsDataset(pv *corev1.PersistentVolume) (*ZFSDataset, error) {
	src := pv.Spec.CSI
	pool := strings.TrimSuffix(src.VolumeAttributes["poolname"], "/")
	if pool == "" || src.VolumeHandle == "" {
		return nil, fmt.Errorf("%w: want the attribute poolname and a volume handle (have poolname %q, handle %q)",
			ErrBadAttributes, src.VolumeAttributes["poolname"], src.VolumeHandle)
	}
	ds := &ZFSDataset{Dataset: pool + "/" + src.VolumeHandle}
	if na := pv.Spec.NodeAffinity; na != nil && na.Required != nil {
		for _, key := range zfsNodeKeys {
			for _, term := range na.Required.NodeSelectorTerms {
				for _, e := range term.MatchExpressions {
					if e.Key == key && e.Operator == corev1.NodeSelectorOpIn && len(e.Values) > 0 && ds.Node == "" {
						ds.Node = e.Values[0]
					}
				}
			}
		}
	}
	return ds, nil
}

// provisioner returns the driver that provisions an unbound PVC, from the
// annotations the PV controller sets; "" when there is none.
func provisioner(pvc *corev1.PersistentVolumeClaim) string {
	for _, k := range []string{"volume.kubernetes.io/storage-provisioner", "volume.beta.kubernetes.io/storage-provisioner"} {
		if p := pvc.Annotations[k]; p != "" {
			return p
		}
	}
	return ""
}

// sourceKind names the kind of volume source of a PV without a CSI or rbd
// source, for error messages.
func sourceKind(pv *corev1.PersistentVolume) string {
	s := pv.Spec.PersistentVolumeSource
	switch {
	case s.HostPath != nil:
		return "hostPath"
	case s.Local != nil:
		return "local"
	case s.NFS != nil:
		return "nfs"
	case s.ISCSI != nil:
		return "iscsi"
	case s.CephFS != nil:
		return "cephfs"
	case s.FC != nil:
		return "fc"
	default:
		return "non-CSI"
	}
}
