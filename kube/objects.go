package kube

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/restmapper"
)

// dynClients are the dynamic client, discovery and REST mapper of a Client,
// built from its REST configuration on first use.
type dynClients struct {
	once   sync.Once
	err    error
	dyn    dynamic.Interface
	disc   *discovery.DiscoveryClient
	mapper *restmapper.DeferredDiscoveryRESTMapper
}

// clients returns the dynamic clients of c.
func (c *Client) clients() (*dynClients, error) {
	d := &c.dyn
	d.once.Do(func() {
		if c.cfg == nil {
			d.err = errors.New("kube: this client has no REST configuration (NewForClientset): objects and snapshots need New")
			return
		}
		if d.dyn, d.err = dynamic.NewForConfig(c.cfg); d.err != nil {
			d.err = fmt.Errorf("kube: dynamic client for %s: %w", c.cfg.Host, d.err)
			return
		}
		if d.disc, d.err = discovery.NewDiscoveryClientForConfig(c.cfg); d.err != nil {
			d.err = fmt.Errorf("kube: discovery client for %s: %w", c.cfg.Host, d.err)
			return
		}
		d.mapper = restmapper.NewDeferredDiscoveryRESTMapperWithContext(memory.NewMemCacheClientWithContext(d.disc))
	})
	return d, d.err
}

// Resources of the objects kube reads and writes by name.
var (
	gvrNamespaces      = schema.GroupVersionResource{Version: "v1", Resource: "namespaces"}
	gvrPVs             = schema.GroupVersionResource{Version: "v1", Resource: "persistentvolumes"}
	gvrStorageClasses  = schema.GroupVersionResource{Group: "storage.k8s.io", Version: "v1", Resource: "storageclasses"}
	gvrCRDs            = schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}
	gvrSnapshots       = schema.GroupVersionResource{Group: SnapshotGroup, Version: "v1", Resource: "volumesnapshots"}
	gvrSnapshotContent = schema.GroupVersionResource{Group: SnapshotGroup, Version: "v1", Resource: "volumesnapshotcontents"}
	gvrSnapshotClasses = schema.GroupVersionResource{Group: SnapshotGroup, Version: "v1", Resource: "volumesnapshotclasses"}
)

// ObjectPath is where an object lives in a backup archive:
// GROUP/VERSION/KIND/NAME.yaml, GROUP "core" for the core group ("v1").
// A '/' or '%' in the name is percent-escaped.
func ObjectPath(o *unstructured.Unstructured) string {
	gvk := o.GroupVersionKind()
	g := gvk.Group
	if g == "" {
		g = "core"
	}
	name := strings.NewReplacer("%", "%25", "/", "%2F").Replace(o.GetName())
	return g + "/" + gvk.Version + "/" + gvk.Kind + "/" + name + ".yaml"
}

// KindFilter chooses kinds of objects, as Velero's --include-resources and
// --exclude-resources do. Each name matches, case-insensitively, a kind
// (Deployment), a resource (deployments), its singular or a short name
// (deploy), or either one qualified by its group (deployments.apps,
// Deployment.apps); "*" matches everything. An empty Include includes every
// kind; Exclude wins over Include.
type KindFilter struct {
	Include, Exclude []string
}

// kindNames are the names a kind answers to in a KindFilter.
type kindNames struct {
	group, kind, resource, singular string
	short                           []string
}

func (k kindNames) matches(name string) bool {
	n := strings.ToLower(strings.TrimSpace(name))
	if n == "*" {
		return true
	}
	cands := append([]string{k.kind, k.resource, k.singular}, k.short...)
	for _, c := range cands {
		c = strings.ToLower(c)
		if c == "" {
			continue
		}
		if n == c || (k.group != "" && n == c+"."+strings.ToLower(k.group)) {
			return true
		}
	}
	return false
}

func (f KindFilter) allows(k kindNames) bool {
	if slices.ContainsFunc(f.Exclude, k.matches) {
		return false
	}
	return len(f.Include) == 0 || slices.ContainsFunc(f.Include, k.matches)
}

// Allows reports whether the filter chooses the kind gk whose resource (its
// plural, lower-case name) is resource; resource may be "".
func (f KindFilter) Allows(gk schema.GroupKind, resource string) bool {
	return f.allows(kindNames{group: gk.Group, kind: gk.Kind, resource: resource})
}

// ExportOptions choose what Export reads.
type ExportOptions struct {
	Namespace string     // required
	Kinds     KindFilter // which kinds; the namespace's cluster-scoped dependencies are filtered too
	// SkipSecrets leaves Secrets out without reading them: into a repository
	// that is not encrypted no Secret's data may go.
	SkipSecrets bool
	// SnapshotClasses are VolumeSnapshotClasses to record besides those the
	// namespace's VolumeSnapshots name (the class of the snapshots a backup
	// takes).
	SnapshotClasses []string
}

// Export is a namespace's objects as a backup keeps them.
type Export struct {
	Namespace     string
	ServerVersion string                       // the API server's git version, e.g. v1.37.2
	Objects       []*unstructured.Unstructured // cleaned (CleanObject), sorted by ObjectPath
	// Errors are resources that could not be read (listing refused, an
	// aggregated API down): the export is partial.
	Errors []error
	// Warnings are dependencies that do not exist (a PVC naming a missing
	// StorageClass) and what was left out on purpose.
	Warnings []string
}

// Count returns how many objects of kind the export holds.
func (e *Export) Count(kind string) int {
	n := 0
	for _, o := range e.Objects {
		if o.GetKind() == kind {
			n++
		}
	}
	return n
}

// Excluded from every backup, as Velero does: events are history, not
// state, and are recreated by what happens after a restore.
var backupExcluded = map[schema.GroupResource]bool{
	{Resource: "events"}:                         true,
	{Group: "events.k8s.io", Resource: "events"}: true,
}

// CleanObject removes from o what belongs to one server's life of the
// object rather than to its state: status, metadata.managedFields,
// resourceVersion, uid, creationTimestamp, generation, selfLink and the
// deletion fields, and a PV's claim reference's uid and resourceVersion.
// Owner references stay: Restore skips owned objects.
func CleanObject(o *unstructured.Unstructured) {
	delete(o.Object, "status")
	if o.GetKind() == "PersistentVolume" { // the claim's identity on this server
		unstructured.RemoveNestedField(o.Object, "spec", "claimRef", "uid")
		unstructured.RemoveNestedField(o.Object, "spec", "claimRef", "resourceVersion")
	}
	md, ok := o.Object["metadata"].(map[string]any)
	if !ok {
		return
	}
	for _, k := range []string{"managedFields", "resourceVersion", "uid", "creationTimestamp", "generation",
		"selfLink", "deletionTimestamp", "deletionGracePeriodSeconds"} {
		delete(md, k)
	}
}

// Export reads every namespaced object of opts.Namespace that the server
// lists (discovery plus the dynamic client: custom resources included, the
// preferred version of each resource) but events and resources that cannot
// be created (computed ones, such as metrics), and the cluster-scoped
// objects the namespace depends on: the namespace itself, the PVs bound to
// its PVCs, the StorageClasses they name, the VolumeSnapshotClasses and
// VolumeSnapshotContents of its VolumeSnapshots, and the
// CustomResourceDefinitions of its custom resources. Objects are cleaned
// (CleanObject) and sorted by ObjectPath.
//
// A resource that cannot be listed is an error in Export.Errors and the
// others go on; the error is for what stops the export: the namespace does
// not exist or cannot be read, discovery fails as a whole.
func (c *Client) Export(ctx context.Context, opts ExportOptions) (*Export, error) {
	d, err := c.clients()
	if err != nil {
		return nil, err
	}
	ns := opts.Namespace
	if ns == "" {
		return nil, errors.New("kube: export: no namespace")
	}
	nsObj, err := d.dyn.Resource(gvrNamespaces).Get(ctx, ns, metav1.GetOptions{})
	if err != nil {
		if apierrors.IsNotFound(err) {
			return nil, fmt.Errorf("kube: export: namespace %s does not exist: %w", ns, err)
		}
		return nil, fmt.Errorf("kube: export: reading namespace %s: %w", ns, err)
	}
	ex := &Export{Namespace: ns}
	if v, err := d.disc.ServerVersionWithContext(ctx); err == nil {
		ex.ServerVersion = v.GitVersion
	} else {
		return nil, fmt.Errorf("kube: export: server version: %w", err)
	}
	lists, err := discovery.ServerPreferredNamespacedResourcesWithContext(ctx, d.disc)
	if err != nil {
		var gdf *discovery.ErrGroupDiscoveryFailed
		if !errors.As(err, &gdf) || len(lists) == 0 {
			return nil, fmt.Errorf("kube: export: discovery: %w", err)
		}
		for gv, gerr := range gdf.Groups {
			ex.Errors = append(ex.Errors, fmt.Errorf("kube: export: discovery of %s: %w", gv, gerr))
		}
	}
	add := func(u *unstructured.Unstructured) {
		CleanObject(u)
		ex.Objects = append(ex.Objects, u)
	}
	nsNames := kindNames{kind: "Namespace", resource: "namespaces", singular: "namespace", short: []string{"ns"}}
	if opts.Kinds.allows(nsNames) {
		add(nsObj)
	}
	customGroups := map[schema.GroupResource]bool{} // resources with objects, for their CRDs
	for _, list := range lists {
		gv, err := schema.ParseGroupVersion(list.GroupVersion)
		if err != nil {
			ex.Errors = append(ex.Errors, fmt.Errorf("kube: export: discovery: group version %q: %w", list.GroupVersion, err))
			continue
		}
		for _, r := range list.APIResources {
			gr := schema.GroupResource{Group: gv.Group, Resource: r.Name}
			// a resource that cannot be created cannot be restored either
			// (metrics.k8s.io's PodMetrics, computed on each read)
			if strings.Contains(r.Name, "/") || !slices.Contains(r.Verbs, "list") || !slices.Contains(r.Verbs, "create") || backupExcluded[gr] {
				continue
			}
			if opts.SkipSecrets && gr == (schema.GroupResource{Resource: "secrets"}) {
				ex.Warnings = append(ex.Warnings, "Secrets of namespace "+ns+" left out, unread")
				continue
			}
			names := kindNames{group: gv.Group, kind: r.Kind, resource: r.Name, singular: r.SingularName, short: r.ShortNames}
			if !opts.Kinds.allows(names) {
				continue
			}
			items, err := listAll(ctx, d.dyn.Resource(gv.WithResource(r.Name)).Namespace(ns))
			if err != nil {
				ex.Errors = append(ex.Errors, fmt.Errorf("kube: export: listing %s in namespace %s: %w", gr, ns, err))
				continue
			}
			for i := range items {
				u := &items[i]
				u.SetAPIVersion(gv.String()) // list items may lack it
				u.SetKind(r.Kind)
				add(u)
			}
			if len(items) > 0 && gv.Group != "" {
				customGroups[gr] = true
			}
		}
	}
	c.exportDependencies(ctx, d, ex, opts, customGroups)
	slices.SortFunc(ex.Objects, func(a, b *unstructured.Unstructured) int { return strings.Compare(ObjectPath(a), ObjectPath(b)) })
	ex.Objects = slices.CompactFunc(ex.Objects, func(a, b *unstructured.Unstructured) bool { return ObjectPath(a) == ObjectPath(b) })
	return ex, nil
}

// listAll lists every object of ri, page by page.
func listAll(ctx context.Context, ri dynamic.ResourceInterface) ([]unstructured.Unstructured, error) {
	var out []unstructured.Unstructured
	opts := metav1.ListOptions{Limit: 500}
	for {
		l, err := ri.List(ctx, opts)
		if err != nil {
			return nil, err
		}
		out = append(out, l.Items...)
		if opts.Continue = l.GetContinue(); opts.Continue == "" {
			return out, nil
		}
	}
}

// exportDependencies adds the cluster-scoped objects the namespace's
// objects name.
func (c *Client) exportDependencies(ctx context.Context, d *dynClients, ex *Export, opts ExportOptions, customGroups map[schema.GroupResource]bool) {
	var pvs, classes, snapClasses, contents, crds []string
	snapClasses = append(snapClasses, opts.SnapshotClasses...)
	for _, o := range ex.Objects {
		switch o.GroupVersionKind().GroupKind() {
		case schema.GroupKind{Kind: "PersistentVolumeClaim"}:
			if v, _, _ := unstructured.NestedString(o.Object, "spec", "volumeName"); v != "" {
				pvs = append(pvs, v)
			}
			if v, _, _ := unstructured.NestedString(o.Object, "spec", "storageClassName"); v != "" {
				classes = append(classes, v)
			}
		case schema.GroupKind{Group: SnapshotGroup, Kind: "VolumeSnapshot"}:
			if v, _, _ := unstructured.NestedString(o.Object, "spec", "volumeSnapshotClassName"); v != "" {
				snapClasses = append(snapClasses, v)
			}
		}
	}
	// status is gone from the cleaned objects: the bound contents come from the server
	if opts.Kinds.allows(kindNames{group: SnapshotGroup, kind: "VolumeSnapshotContent", resource: "volumesnapshotcontents"}) {
		for _, o := range ex.Objects {
			if o.GroupVersionKind().GroupKind() != (schema.GroupKind{Group: SnapshotGroup, Kind: "VolumeSnapshot"}) {
				continue
			}
			vs, err := d.dyn.Resource(gvrSnapshots).Namespace(ex.Namespace).Get(ctx, o.GetName(), metav1.GetOptions{})
			if err != nil {
				continue // deleted meanwhile
			}
			if v, _, _ := unstructured.NestedString(vs.Object, "status", "boundVolumeSnapshotContentName"); v != "" {
				contents = append(contents, v)
			}
		}
	}
	for gr := range customGroups {
		crds = append(crds, gr.Resource+"."+gr.Group)
	}
	get := func(gvr schema.GroupVersionResource, names kindNames, list []string, optional bool) {
		if !opts.Kinds.allows(names) {
			return
		}
		slices.Sort(list)
		for _, name := range slices.Compact(list) {
			u, err := d.dyn.Resource(gvr).Get(ctx, name, metav1.GetOptions{})
			switch {
			case err == nil:
				u.SetAPIVersion(gvr.GroupVersion().String())
				u.SetKind(names.kind)
				CleanObject(u)
				ex.Objects = append(ex.Objects, u)
			case apierrors.IsNotFound(err) && optional: // not a CRD: a built-in or aggregated API
			case apierrors.IsNotFound(err):
				ex.Warnings = append(ex.Warnings, fmt.Sprintf("%s %s named by namespace %s does not exist", names.kind, name, ex.Namespace))
			default:
				ex.Errors = append(ex.Errors, fmt.Errorf("kube: export: reading %s %s: %w", names.kind, name, err))
			}
		}
	}
	get(gvrPVs, kindNames{kind: "PersistentVolume", resource: "persistentvolumes", singular: "persistentvolume", short: []string{"pv"}}, pvs, false)
	get(gvrStorageClasses, kindNames{group: "storage.k8s.io", kind: "StorageClass", resource: "storageclasses", singular: "storageclass", short: []string{"sc"}}, classes, false)
	get(gvrSnapshotClasses, kindNames{group: SnapshotGroup, kind: "VolumeSnapshotClass", resource: "volumesnapshotclasses", singular: "volumesnapshotclass", short: []string{"vsclass", "vsclasses"}}, snapClasses, false)
	get(gvrSnapshotContent, kindNames{group: SnapshotGroup, kind: "VolumeSnapshotContent", resource: "volumesnapshotcontents", singular: "volumesnapshotcontent", short: []string{"vsc", "vscs"}}, contents, false)
	get(gvrCRDs, kindNames{group: "apiextensions.k8s.io", kind: "CustomResourceDefinition", resource: "customresourcedefinitions", singular: "customresourcedefinition", short: []string{"crd", "crds"}}, crds, true)
}

// ServerVersion returns the API server's git version (v1.37.2).
func (c *Client) ServerVersion(ctx context.Context) (string, error) {
	d, err := c.clients()
	if err != nil {
		return "", err
	}
	v, err := d.disc.ServerVersionWithContext(ctx)
	if err != nil {
		return "", fmt.Errorf("kube: server version: %w", err)
	}
	return v.GitVersion, nil
}
