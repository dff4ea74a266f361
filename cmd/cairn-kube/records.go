package main

import (
	"encoding/json"
	"fmt"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/cairn-backup/cairn/kube"
)

// Labels of an objects version (besides kube.LabelNamespace).
const (
	labelSelector      = "k8s-selector"       // --selector, when given
	labelServerVersion = "k8s-server-version" // the API server's version
	labelObjects       = "k8s-objects"        // how many objects the archive holds
	labelVolumes       = "k8s-volumes"        // none, data or snapshot
	labelSecrets       = "k8s-secrets"        // included or omitted
)

// Volumes modes.
const (
	volumesNone     = "none"
	volumesData     = "data"
	volumesSnapshot = "snapshot"
)

// recordGroup and recordKind are the archive documents that record what a
// backup took of each PVC's data: backup.cairn.io/v1/VolumeBackup/PVC.yaml.
// They are not Kubernetes objects of any server, and restore does not apply
// them.
const (
	recordGroup   = "backup.cairn.io"
	recordVersion = recordGroup + "/v1"
	recordKind    = "VolumeBackup"
)

// rbdImageJSON is an RBD image in a record.
type rbdImageJSON struct {
	Pool      string `json:"pool"`
	Namespace string `json:"namespace,omitempty"`
	Image     string `json:"image"`
	ClusterID string `json:"clusterID,omitempty"`
}

// volumeRecord is what a backup took of one PVC's data.
type volumeRecord struct {
	Namespace    string         `json:"namespace"`
	PVC          string         `json:"pvc"`
	PV           string         `json:"pv,omitempty"`
	Driver       string         `json:"driver,omitempty"`
	StorageClass string         `json:"storageClass,omitempty"`
	Mode         string         `json:"mode"`               // data or snapshot
	Image        *rbdImageJSON  `json:"rbdImage,omitempty"` // data: the image backed up
	Version      string         `json:"version,omitempty"`  // data: the block version
	Size         int64          `json:"size,omitempty"`
	Snapshot     *kube.Snapshot `json:"snapshot,omitempty"` // snapshot: the VolumeSnapshot
	Error        string         `json:"error,omitempty"`    // why it was not backed up
}

// OK reports whether the PVC's data was backed up.
func (r volumeRecord) OK() bool { return r.Error == "" }

// object returns the record as an archive document.
func (r volumeRecord) object() (*unstructured.Unstructured, error) {
	b, err := json.Marshal(r)
	if err != nil {
		return nil, err
	}
	var spec map[string]any
	if err := json.Unmarshal(b, &spec); err != nil {
		return nil, err
	}
	return &unstructured.Unstructured{Object: map[string]any{"apiVersion": recordVersion, "kind": recordKind,
		"metadata": map[string]any{"name": r.PVC, "namespace": r.Namespace}, "spec": spec}}, nil
}

// splitRecords separates the records from the Kubernetes objects of an
// archive; records are indexed by PVC name.
func splitRecords(objs []*unstructured.Unstructured) ([]*unstructured.Unstructured, map[string]volumeRecord, error) {
	recs := map[string]volumeRecord{}
	var out []*unstructured.Unstructured
	for _, o := range objs {
		if o.GroupVersionKind().Group != recordGroup {
			out = append(out, o)
			continue
		}
		spec, _, _ := unstructured.NestedMap(o.Object, "spec")
		b, err := json.Marshal(spec)
		if err != nil {
			return nil, nil, fmt.Errorf("record %s: %w", kube.ObjectPath(o), err)
		}
		var r volumeRecord
		if err := json.Unmarshal(b, &r); err != nil {
			return nil, nil, fmt.Errorf("record %s: %w", kube.ObjectPath(o), err)
		}
		recs[o.GetName()] = r
	}
	return out, recs, nil
}

func (i *rbdImageJSON) kube() *kube.RBDImage {
	return &kube.RBDImage{Pool: i.Pool, Namespace: i.Namespace, Image: i.Image, ClusterID: i.ClusterID}
}
