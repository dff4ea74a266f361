// Package kube is cairn's Kubernetes side: it talks to the API server and
// knows no repository (the binaries join the two).
//
// It selects PersistentVolumeClaims by namespace and label selector, the way
// the cluster's backup flows name what to back up ("PVCs in namespace garage
// with label backup-this-pvc=true"), and resolves each one through its bound
// PersistentVolume to the volume behind it:
//
//   - a ceph-csi RBD image (driver rbd.csi.ceph.com: pool, imageName and
//     radosNamespace of the CSI volume attributes; static volumes too), or an
//     in-tree rbd PV source;
//   - an OpenEBS ZFS LocalPV dataset (driver zfs.csi.openebs.io: dataset
//     POOLNAME/VOLUMEHANDLE, on the node that the PV's node affinity names).
//
// Anything else (an unbound or pending PVC, a PV of another driver, a PV
// without a CSI source) is an error of that PVC alone, naming it and its
// driver; Select still resolves every other PVC.
//
// A volume's name in a repository is NAMESPACE/PVC (Benji's Kubernetes
// convention) and Volume.Labels gives the labels a backup should carry so that
// `ls --label` finds a PVC's versions.
//
// Namespaces (objects.go, archive.go, restore.go): Export reads every object
// of a namespace that the server lists (discovery and the dynamic client,
// custom resources included, events left out) and the cluster-scoped
// objects it depends on, cleaned of what belongs to one server's life of
// them; WriteArchive and ReadArchive keep them as a tar of sorted YAML
// documents at GROUP/VERSION/KIND/NAME.yaml; Restore creates them again in
// dependency order, renamed by a namespace mapping, with an outcome per
// object, PVCs bound to restored data. Snapshots (snapshots.go): CSI
// VolumeSnapshots created, waited for, kept (deletionPolicy Retain),
// deleted, and pre-provisioned from a recorded handle.
//
// Configuration: an explicit kubeconfig path, else the in-cluster service
// account, else $KUBECONFIG (or ~/.kube/config), see Config. The commands need
// get and list on persistentvolumeclaims, get on persistentvolumes and list
// on volumeattachments (deploy/rbac.yaml); exports get and list on every
// resource of the namespace and get on its dependencies
// (deploy/cairn-kube-rbac.yaml).
package kube
