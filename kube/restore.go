package kube

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
)

// What Restore did with an object.
const (
	ActionCreated = "created"
	ActionUpdated = "updated"
	ActionSkipped = "skipped"
	ActionFailed  = "failed"
)

// Outcome is what Restore did with one object.
type Outcome struct {
	Path      string `json:"path,omitempty"` // in the archive; "" for objects Restore made (PVs, snapshots)
	Kind      string `json:"kind"`
	Namespace string `json:"namespace,omitempty"`
	Name      string `json:"name"`
	Action    string `json:"action"` // ActionCreated, ActionUpdated, ActionSkipped or ActionFailed
	Reason    string `json:"reason,omitempty"`
	Error     string `json:"error,omitempty"`
}

// Existing says what Restore does with an object that already exists.
type Existing string

// Existing policies.
const (
	ExistingSkip   Existing = "skip"   // leave it as it is (Velero's default)
	ExistingUpdate Existing = "update" // server-side apply the backed-up object over it
)

// VolumeSource is where a restored PVC gets its data from, instead of the PV
// it was bound to.
type VolumeSource struct {
	// RBD is an RBD image holding the data (restored from a block version):
	// the PVC is bound to a new static PV of that image.
	RBD *RBDImage
	// Snapshot is a recorded CSI snapshot: the PVC's dataSource is a
	// VolumeSnapshot of that name in the PVC's namespace (the existing one,
	// else one pre-provisioned from the recorded handle).
	Snapshot *Snapshot
}

// RestoreOptions tune Restore.
type RestoreOptions struct {
	// NamespaceMapping renames namespaces: old -> new.
	NamespaceMapping map[string]string
	Kinds            KindFilter
	Existing         Existing // "" is ExistingSkip
	// Volume is asked, for each PVC about to be created (it does not exist
	// in the target namespace), where its data comes from. pvc is the
	// object as backed up, namespace its target namespace. A nil source
	// restores the PVC as recorded (bound to its recorded PV, restored when
	// absent; in a renamed namespace a new volume is provisioned). An error
	// fails that PVC only. Nil: every PVC as recorded.
	Volume func(ctx context.Context, pvc *unstructured.Unstructured, namespace string) (*VolumeSource, error)
	// FieldManager of creates and updates; "" is ManagedBy.
	FieldManager string
	Logger       *slog.Logger // nil: discard
	// CRDWait is how long to wait for a created CRD to be established; 0 is 60s.
	CRDWait time.Duration
}

// restoreOrder ranks kinds: namespaces, CRDs, classes, service accounts,
// secrets, config maps, quotas, RBAC, PVs, PVCs, services, then workloads
// and everything else (custom resources among them).
var restoreOrder = map[schema.GroupKind]int{
	{Kind: "Namespace"}: 0,
	{Group: "apiextensions.k8s.io", Kind: "CustomResourceDefinition"}: 1,
	{Group: "storage.k8s.io", Kind: "StorageClass"}:                   2,
	{Group: SnapshotGroup, Kind: "VolumeSnapshotClass"}:               2,
	{Kind: "ServiceAccount"}:                                          3,
	{Kind: "Secret"}:                                                  4,
	{Kind: "ConfigMap"}:                                               5,
	{Kind: "LimitRange"}:                                              6,
	{Kind: "ResourceQuota"}:                                           6,
	{Group: "rbac.authorization.k8s.io", Kind: "Role"}:                7,
	{Group: "rbac.authorization.k8s.io", Kind: "RoleBinding"}:         7,
	{Kind: "PersistentVolume"}:                                        8,
	{Kind: "PersistentVolumeClaim"}:                                   9,
	{Kind: "Service"}:                                                 10,
}

const restoreOrderRest = 11

// rank is o's place in the restore order.
func rank(o *unstructured.Unstructured) int {
	if r, ok := restoreOrder[o.GroupVersionKind().GroupKind()]; ok {
		return r
	}
	return restoreOrderRest
}

// notRestored are kinds kept in a backup as records only, and why.
var notRestored = map[schema.GroupKind]string{
	{Kind: "Endpoints"}: "kept as a record: the control plane derives it from Services",
	{Group: "discovery.k8s.io", Kind: "EndpointSlice"}: "kept as a record: the control plane derives it from Services",
	{Kind: "Event"}:                                       "events are not restored",
	{Group: "events.k8s.io", Kind: "Event"}:               "events are not restored",
	{Group: SnapshotGroup, Kind: "VolumeSnapshot"}:        "kept as a record: snapshots come back through the PVCs that use them",
	{Group: SnapshotGroup, Kind: "VolumeSnapshotContent"}: "kept as a record: snapshots come back through the PVCs that use them",
	{Group: "storage.k8s.io", Kind: "VolumeAttachment"}:   "kept as a record: attachments belong to nodes",
	{Group: "coordination.k8s.io", Kind: "Lease"}:         "kept as a record: leases belong to running processes",
}

// OrderForRestore sorts objects in the order Restore creates them.
func OrderForRestore(objs []*unstructured.Unstructured) {
	slices.SortStableFunc(objs, func(a, b *unstructured.Unstructured) int {
		if d := rank(a) - rank(b); d != 0 {
			return d
		}
		return strings.Compare(ObjectPath(a), ObjectPath(b))
	})
}

// restorer is one Restore run.
type restorer struct {
	c      *Client
	d      *dynClients
	opts   RestoreOptions
	log    *slog.Logger
	pvs    map[string]*unstructured.Unstructured // recorded PVs by name
	usedPV map[string]bool                       // recorded PVs whose PVC is restored as recorded
	out    []Outcome
}

// Restore creates objs (as ReadArchive returns them) in dependency order
// (OrderForRestore) and reports each one: created, updated (Existing
// update), skipped (it exists; it is owned by another object, which makes
// it; its kind is not restored or filtered out) or failed. It never stops at
// the first failure; the error is for what stops everything (no client).
//
// Namespaced objects go to their namespace renamed by NamespaceMapping, and
// what names a namespace inside them follows (PV claim references,
// RoleBinding subjects). Before creation, objects lose what the new server
// assigns: a Service's cluster IPs (and node ports in a renamed namespace),
// a Pod's node and service-account token volume, a PVC's binding
// annotations. PVCs come back through opts.Volume: bound to a new PV of a
// restored RBD image, or with a VolumeSnapshot as dataSource. Recorded PVs
// are created only for PVCs restored as recorded, when absent.
func (c *Client) Restore(ctx context.Context, objs []*unstructured.Unstructured, opts RestoreOptions) ([]Outcome, error) {
	d, err := c.clients()
	if err != nil {
		return nil, err
	}
	if opts.Existing == "" {
		opts.Existing = ExistingSkip
	}
	if opts.Existing != ExistingSkip && opts.Existing != ExistingUpdate {
		return nil, fmt.Errorf("kube: restore: existing %q: want skip or update", opts.Existing)
	}
	if opts.FieldManager == "" {
		opts.FieldManager = ManagedBy
	}
	if opts.CRDWait <= 0 {
		opts.CRDWait = 60 * time.Second
	}
	r := &restorer{c: c, d: d, opts: opts, log: opts.Logger, pvs: map[string]*unstructured.Unstructured{}, usedPV: map[string]bool{}}
	if r.log == nil {
		r.log = slog.New(slog.DiscardHandler)
	}
	objs = slices.Clone(objs)
	OrderForRestore(objs)
	for _, o := range objs {
		if o.GroupVersionKind().GroupKind() == (schema.GroupKind{Kind: "PersistentVolume"}) {
			r.pvs[o.GetName()] = o
		}
	}
	// recorded PVs are created with the PVCs restored as recorded (restoreRecordedPV)
	var pvObjs []*unstructured.Unstructured
	crdsCreated := false
	for _, o := range objs {
		gk := o.GroupVersionKind().GroupKind()
		if gk == (schema.GroupKind{Kind: "PersistentVolume"}) {
			pvObjs = append(pvObjs, o)
			continue
		}
		if rank(o) > 1 && crdsCreated { // custom resources need their CRDs served
			d.mapper.ResetWithContext(ctx)
			crdsCreated = false
		}
		oc := r.restoreOne(ctx, o)
		if gk.Kind == "CustomResourceDefinition" && oc.Action == ActionCreated {
			if err := r.waitCRD(ctx, o.GetName()); err != nil {
				oc.Action, oc.Error = ActionFailed, err.Error()
			}
			crdsCreated = true
		}
		r.add(oc)
	}
	// recorded PVs not needed by any restored PVC
	for _, pv := range pvObjs {
		if !r.usedPV[pv.GetName()] {
			r.add(Outcome{Path: ObjectPath(pv), Kind: "PersistentVolume", Name: pv.GetName(), Action: ActionSkipped,
				Reason: "kept as a record: its PVC was not restored as recorded"})
		}
	}
	return r.out, nil
}

func (r *restorer) add(oc Outcome) {
	r.out = append(r.out, oc)
	args := []any{"kind", oc.Kind, "name", oc.Name, "action", oc.Action}
	if oc.Namespace != "" {
		args = append(args, "namespace", oc.Namespace)
	}
	if oc.Reason != "" {
		args = append(args, "reason", oc.Reason)
	}
	if oc.Error != "" {
		r.log.Error("restore", append(args, "err", oc.Error)...)
		return
	}
	r.log.Info("restore", args...)
}

// mapNS returns the target namespace of ns.
func (r *restorer) mapNS(ns string) string {
	if n, ok := r.opts.NamespaceMapping[ns]; ok && n != "" {
		return n
	}
	return ns
}

// restoreOne restores one object, which is not a PV.
func (r *restorer) restoreOne(ctx context.Context, orig *unstructured.Unstructured) Outcome {
	o := orig.DeepCopy()
	gvk := o.GroupVersionKind()
	gk := gvk.GroupKind()
	oc := Outcome{Path: ObjectPath(orig), Kind: gvk.Kind, Name: o.GetName()}
	if o.GetNamespace() != "" {
		o.SetNamespace(r.mapNS(o.GetNamespace()))
		oc.Namespace = o.GetNamespace()
	}
	if gk == (schema.GroupKind{Kind: "Namespace"}) {
		o.SetName(r.mapNS(o.GetName()))
		oc.Name = o.GetName()
	}
	mapping, err := r.d.mapper.RESTMapping(gk, gvk.Version)
	if err != nil {
		oc.Action, oc.Error = ActionFailed, fmt.Sprintf("kind %s is not served: %v", gvk, err)
		return oc
	}
	if !r.opts.Kinds.allows(kindNames{group: gk.Group, kind: gk.Kind, resource: mapping.Resource.Resource}) {
		oc.Action, oc.Reason = ActionSkipped, "kind not included"
		return oc
	}
	if why, ok := notRestored[gk]; ok {
		oc.Action, oc.Reason = ActionSkipped, why
		return oc
	}
	if refs := o.GetOwnerReferences(); len(refs) > 0 {
		oc.Action, oc.Reason = ActionSkipped, fmt.Sprintf("owned by %s %s, which makes it", refs[0].Kind, refs[0].Name)
		return oc
	}
	var ri dynamic.ResourceInterface = r.d.dyn.Resource(mapping.Resource)
	if mapping.Scope.Name() == meta.RESTScopeNameNamespace {
		if o.GetNamespace() == "" {
			oc.Action, oc.Error = ActionFailed, "a namespaced object without a namespace"
			return oc
		}
		ri = r.d.dyn.Resource(mapping.Resource).Namespace(o.GetNamespace())
	}
	if skip := r.transform(orig, o); skip != "" {
		oc.Action, oc.Reason = ActionSkipped, skip
		return oc
	}
	isPVC := gk == (schema.GroupKind{Kind: "PersistentVolumeClaim"})
	if isPVC {
		// a PVC that exists keeps its data: only its object may be updated
		if _, err := ri.Get(ctx, o.GetName(), metav1.GetOptions{}); err == nil {
			return r.existing(ctx, ri, o, oc)
		} else if !apierrors.IsNotFound(err) {
			oc.Action, oc.Error = ActionFailed, err.Error()
			return oc
		}
		if err := r.preparePVC(ctx, orig, o, &oc); err != nil {
			oc.Action, oc.Error = ActionFailed, err.Error()
			return oc
		}
	}
	_, err = ri.Create(ctx, o, metav1.CreateOptions{FieldManager: r.opts.FieldManager})
	switch {
	case err == nil:
		oc.Action = ActionCreated
		if isPVC {
			r.restoreRecordedPV(ctx, orig, o)
		}
	case apierrors.IsAlreadyExists(err):
		return r.existing(ctx, ri, o, oc)
	default:
		oc.Action, oc.Error = ActionFailed, err.Error()
	}
	return oc
}

// existing handles an object that exists already.
func (r *restorer) existing(ctx context.Context, ri dynamic.ResourceInterface, o *unstructured.Unstructured, oc Outcome) Outcome {
	if r.opts.Existing != ExistingUpdate {
		oc.Action, oc.Reason = ActionSkipped, "exists"
		return oc
	}
	body, err := o.MarshalJSON()
	if err != nil {
		oc.Action, oc.Error = ActionFailed, err.Error()
		return oc
	}
	force := true
	if _, err := ri.Patch(ctx, o.GetName(), types.ApplyPatchType, body, metav1.PatchOptions{FieldManager: r.opts.FieldManager, Force: &force}); err != nil {
		oc.Action, oc.Error = ActionFailed, "updating the existing object: "+err.Error()
		return oc
	}
	oc.Action, oc.Reason = ActionUpdated, "existed; the backed-up fields applied over it"
	return oc
}

// transform rewrites o for its new life; a non-empty result skips it.
func (r *restorer) transform(orig, o *unstructured.Unstructured) string {
	gk := o.GroupVersionKind().GroupKind()
	renamed := orig.GetNamespace() != o.GetNamespace()
	switch gk {
	case schema.GroupKind{Kind: "Secret"}:
		if t, _, _ := unstructured.NestedString(o.Object, "type"); t == "kubernetes.io/service-account-token" {
			return "a service account token: the control plane makes a new one"
		}
	case schema.GroupKind{Kind: "ConfigMap"}:
		if o.GetName() == "kube-root-ca.crt" {
			return "made by the control plane in every namespace"
		}
	case schema.GroupKind{Kind: "Service"}:
		if ip, _, _ := unstructured.NestedString(o.Object, "spec", "clusterIP"); ip != "None" {
			unstructured.RemoveNestedField(o.Object, "spec", "clusterIP")
			unstructured.RemoveNestedField(o.Object, "spec", "clusterIPs")
		}
		unstructured.RemoveNestedField(o.Object, "spec", "healthCheckNodePort")
		if renamed {
			if ports, ok, _ := unstructured.NestedSlice(o.Object, "spec", "ports"); ok {
				for _, p := range ports {
					if m, ok := p.(map[string]any); ok {
						delete(m, "nodePort")
					}
				}
				_ = unstructured.SetNestedSlice(o.Object, ports, "spec", "ports")
			}
		}
	case schema.GroupKind{Kind: "Pod"}:
		unstructured.RemoveNestedField(o.Object, "spec", "nodeName")
		dropTokenVolumes(o)
	case schema.GroupKind{Group: "rbac.authorization.k8s.io", Kind: "RoleBinding"}:
		if subs, ok, _ := unstructured.NestedSlice(o.Object, "subjects"); ok {
			for _, s := range subs {
				if m, ok := s.(map[string]any); ok {
					if ns, ok := m["namespace"].(string); ok && ns != "" {
						m["namespace"] = r.mapNS(ns)
					}
				}
			}
			_ = unstructured.SetNestedSlice(o.Object, subs, "subjects")
		}
	}
	return ""
}

// dropTokenVolumes removes the projected service-account token volume that
// the API server added to a Pod (kube-api-access-*) and its mounts: the new
// Pod gets its own.
func dropTokenVolumes(o *unstructured.Unstructured) {
	vols, _, _ := unstructured.NestedSlice(o.Object, "spec", "volumes")
	drop := map[string]bool{}
	var keep []any
	for _, v := range vols {
		m, _ := v.(map[string]any)
		if name, _ := m["name"].(string); strings.HasPrefix(name, "kube-api-access-") {
			drop[name] = true
			continue
		}
		keep = append(keep, v)
	}
	if len(drop) == 0 {
		return
	}
	_ = unstructured.SetNestedSlice(o.Object, keep, "spec", "volumes")
	for _, field := range []string{"containers", "initContainers"} {
		cs, _, _ := unstructured.NestedSlice(o.Object, "spec", field)
		for _, c := range cs {
			m, _ := c.(map[string]any)
			mounts, _ := m["volumeMounts"].([]any)
			var km []any
			for _, mt := range mounts {
				mm, _ := mt.(map[string]any)
				if name, _ := mm["name"].(string); !drop[name] {
					km = append(km, mt)
				}
			}
			if m != nil && mounts != nil {
				if len(km) == 0 {
					delete(m, "volumeMounts")
				} else {
					m["volumeMounts"] = km
				}
			}
		}
		if cs != nil {
			_ = unstructured.SetNestedSlice(o.Object, cs, "spec", field)
		}
	}
}

// pvcBindingAnnotations are set by the PV controller and the scheduler for
// a volume they bound or placed; a restored PVC is bound anew.
var pvcBindingAnnotations = []string{
	"pv.kubernetes.io/bind-completed", "pv.kubernetes.io/bound-by-controller",
	"volume.beta.kubernetes.io/storage-provisioner", "volume.kubernetes.io/storage-provisioner",
	"volume.kubernetes.io/selected-node",
}

// preparePVC decides where a PVC about to be created gets its data: o is
// rewritten accordingly, and the PV of a restored RBD image or the
// VolumeSnapshot it restores from is created.
func (r *restorer) preparePVC(ctx context.Context, orig, o *unstructured.Unstructured, oc *Outcome) error {
	ann := o.GetAnnotations()
	for _, k := range pvcBindingAnnotations {
		delete(ann, k)
	}
	o.SetAnnotations(ann)
	var src *VolumeSource
	if r.opts.Volume != nil {
		var err error
		if src, err = r.opts.Volume(ctx, orig, o.GetNamespace()); err != nil {
			return err
		}
	}
	recordedPV, _, _ := unstructured.NestedString(o.Object, "spec", "volumeName")
	switch {
	case src != nil && src.RBD != nil:
		pv, err := r.createImagePV(ctx, o, recordedPV, src.RBD)
		if err != nil {
			return err
		}
		_ = unstructured.SetNestedField(o.Object, pv, "spec", "volumeName")
		unstructured.RemoveNestedField(o.Object, "spec", "dataSource")
		unstructured.RemoveNestedField(o.Object, "spec", "dataSourceRef")
		oc.Reason = "bound to PV " + pv + " of the restored image " + src.RBD.Spec()
	case src != nil && src.Snapshot != nil:
		outs, err := r.c.ensureSnapshot(ctx, r.d, src.Snapshot, o.GetNamespace())
		for _, x := range outs {
			r.add(x)
		}
		if err != nil {
			return err
		}
		unstructured.RemoveNestedField(o.Object, "spec", "volumeName")
		unstructured.RemoveNestedField(o.Object, "spec", "dataSourceRef")
		_ = unstructured.SetNestedMap(o.Object, map[string]any{"apiGroup": SnapshotGroup, "kind": "VolumeSnapshot",
			"name": src.Snapshot.Name}, "spec", "dataSource")
		oc.Reason = "data from VolumeSnapshot " + src.Snapshot.Name
	case recordedPV != "" && o.GetNamespace() != orig.GetNamespace():
		unstructured.RemoveNestedField(o.Object, "spec", "volumeName")
		oc.Reason = "in a renamed namespace: a new, empty volume (PV " + recordedPV + " stays with the original PVC)"
	}
	return nil
}

// restoreRecordedPV creates the recorded PV of a PVC restored as recorded,
// when the PV does not exist, bound to the new PVC.
func (r *restorer) restoreRecordedPV(ctx context.Context, orig, created *unstructured.Unstructured) {
	name, _, _ := unstructured.NestedString(created.Object, "spec", "volumeName")
	recName, _, _ := unstructured.NestedString(orig.Object, "spec", "volumeName")
	if name == "" || name != recName {
		return
	}
	pv, ok := r.pvs[name]
	if !ok {
		return
	}
	r.usedPV[name] = true
	oc := Outcome{Path: ObjectPath(pv), Kind: "PersistentVolume", Name: name}
	if !r.opts.Kinds.allows(kindNames{kind: "PersistentVolume", resource: "persistentvolumes", short: []string{"pv"}}) {
		oc.Action, oc.Reason = ActionSkipped, "kind not included"
		r.add(oc)
		return
	}
	p := pv.DeepCopy()
	_ = unstructured.SetNestedMap(p.Object, map[string]any{"apiVersion": "v1", "kind": "PersistentVolumeClaim",
		"namespace": created.GetNamespace(), "name": created.GetName()}, "spec", "claimRef")
	ri := r.d.dyn.Resource(gvrPVs)
	_, err := ri.Create(ctx, p, metav1.CreateOptions{FieldManager: r.opts.FieldManager})
	switch {
	case err == nil:
		oc.Action, oc.Reason = ActionCreated, "the recorded PV of PVC "+created.GetNamespace()+"/"+created.GetName()
	case apierrors.IsAlreadyExists(err):
		oc = r.existing(ctx, ri, p, oc)
	default:
		oc.Action, oc.Error = ActionFailed, err.Error()
	}
	r.add(oc)
}

// createImagePV creates a static PV for the RBD image img, bound to the
// PVC o (before it is created), modelled on the recorded PV when there is
// one, and returns its name.
func (r *restorer) createImagePV(ctx context.Context, o *unstructured.Unstructured, recordedPV string, img *RBDImage) (string, error) {
	sum := sha256.Sum256([]byte(o.GetNamespace() + "/" + o.GetName() + "\x00" + img.Spec()))
	name := "cairn-" + dnsName(o.GetNamespace()+"-"+o.GetName()) + "-" + hex.EncodeToString(sum[:5])
	spec := map[string]any{}
	if rec, ok := r.pvs[recordedPV]; ok {
		if s, ok, _ := unstructured.NestedMap(rec.Object, "spec"); ok {
			spec = s
		}
	}
	if _, ok := spec["capacity"]; !ok {
		if q, ok, _ := unstructured.NestedString(o.Object, "spec", "resources", "requests", "storage"); ok {
			spec["capacity"] = map[string]any{"storage": q}
		}
	}
	if _, ok := spec["accessModes"]; !ok {
		if am, ok, _ := unstructured.NestedSlice(o.Object, "spec", "accessModes"); ok {
			spec["accessModes"] = am
		}
	}
	if sc, ok, _ := unstructured.NestedString(o.Object, "spec", "storageClassName"); ok {
		spec["storageClassName"] = sc
	}
	if vm, ok, _ := unstructured.NestedString(o.Object, "spec", "volumeMode"); ok {
		spec["volumeMode"] = vm
	}
	spec["persistentVolumeReclaimPolicy"] = "Retain" // a static volume: cairn made it, an operator removes it
	spec["claimRef"] = map[string]any{"apiVersion": "v1", "kind": "PersistentVolumeClaim",
		"namespace": o.GetNamespace(), "name": o.GetName()}
	if rbd, ok := spec["rbd"].(map[string]any); ok { // in-tree
		rbd["pool"], rbd["image"] = img.Pool, img.Image
	} else {
		csi, _ := spec["csi"].(map[string]any)
		if csi == nil {
			csi = map[string]any{"driver": DriverCephRBD, "fsType": "ext4"}
		}
		attrs := map[string]any{}
		if a, ok := csi["volumeAttributes"].(map[string]any); ok {
			attrs = maps.Clone(a)
		}
		attrs["pool"], attrs["imageName"], attrs["staticVolume"] = img.Pool, img.Image, "true"
		delete(attrs, "radosNamespace")
		if img.Namespace != "" {
			attrs["radosNamespace"] = img.Namespace
		}
		if img.ClusterID != "" {
			attrs["clusterID"] = img.ClusterID
		}
		delete(attrs, "journalPool")
		csi["volumeAttributes"] = attrs
		csi["volumeHandle"] = img.Image // ceph-csi: a static volume's handle is its image
		spec["csi"] = csi
	}
	pv := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "v1", "kind": "PersistentVolume",
		"metadata": map[string]any{"name": name, "labels": map[string]any{LabelManagedBy: ManagedBy}}, "spec": spec}}
	oc := Outcome{Kind: "PersistentVolume", Name: name, Reason: "for PVC " + o.GetNamespace() + "/" + o.GetName() + ", image " + img.Spec()}
	_, err := r.d.dyn.Resource(gvrPVs).Create(ctx, pv, metav1.CreateOptions{FieldManager: r.opts.FieldManager})
	switch {
	case err == nil:
		oc.Action = ActionCreated
	case apierrors.IsAlreadyExists(err): // an earlier run's, for the same image
		oc.Action = ActionSkipped
		oc.Reason = "exists; " + oc.Reason
	default:
		oc.Action, oc.Error = ActionFailed, err.Error()
		r.add(oc)
		return "", fmt.Errorf("kube: creating PV %s for PVC %s/%s: %w", name, o.GetNamespace(), o.GetName(), err)
	}
	r.add(oc)
	return name, nil
}

// waitCRD waits until the CRD name is established.
func (r *restorer) waitCRD(ctx context.Context, name string) error {
	deadline := time.Now().Add(r.opts.CRDWait)
	for {
		u, err := r.d.dyn.Resource(gvrCRDs).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return fmt.Errorf("kube: CRD %s: %w", name, err)
		}
		conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
		for _, c := range conds {
			m, _ := c.(map[string]any)
			if m["type"] == "Established" && m["status"] == "True" {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("kube: CRD %s not established after %s", name, r.opts.CRDWait)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// Failed counts the failed outcomes.
func Failed(outs []Outcome) int {
	n := 0
	for _, o := range outs {
		if o.Action == ActionFailed {
			n++
		}
	}
	return n
}

// errNoObjects is returned for an archive without objects.
var errNoObjects = errors.New("kube: the archive holds no objects")

// CheckArchive checks that objs is a backup of a namespace and returns the
// namespace's name (from its Namespace object, else the namespace of its
// objects).
func CheckArchive(objs []*unstructured.Unstructured) (string, error) {
	if len(objs) == 0 {
		return "", errNoObjects
	}
	for _, o := range objs {
		if o.GroupVersionKind().GroupKind() == (schema.GroupKind{Kind: "Namespace"}) {
			return o.GetName(), nil
		}
	}
	for _, o := range objs {
		if o.GetNamespace() != "" {
			return o.GetNamespace(), nil
		}
	}
	return "", errors.New("kube: the archive holds no namespaced object")
}
