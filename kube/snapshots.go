package kube

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
)

// SnapshotGroup is the API group of CSI snapshots (external-snapshotter's
// CRDs: VolumeSnapshot, VolumeSnapshotContent, VolumeSnapshotClass, v1).
const SnapshotGroup = "snapshot.storage.k8s.io"

// Labels kube puts on the VolumeSnapshots it creates.
const (
	LabelManagedBy = "app.kubernetes.io/managed-by" // ManagedBy
	ManagedBy      = "cairn-kube"
	LabelSnapPVC   = "cairn.io/pvc" // the PVC a snapshot is of
)

// Snapshot is a CSI VolumeSnapshot a backup took, with what a restore needs
// when the VolumeSnapshot itself is gone: its VolumeSnapshotContent and the
// CSI driver's handle of the snapshot.
type Snapshot struct {
	Namespace   string `json:"namespace"`
	Name        string `json:"name"`
	PVC         string `json:"pvc"`
	Class       string `json:"class,omitempty"`   // VolumeSnapshotClass
	Content     string `json:"content,omitempty"` // the bound VolumeSnapshotContent
	Handle      string `json:"handle,omitempty"`  // status.snapshotHandle of the content
	Driver      string `json:"driver,omitempty"`
	RestoreSize int64  `json:"restoreSize,omitempty"` // bytes; 0 when the driver says nothing
	VolumeMode  string `json:"volumeMode,omitempty"`  // the content's sourceVolumeMode, when set
}

func (s Snapshot) String() string { return "VolumeSnapshot " + s.Namespace + "/" + s.Name }

// SnapshotName returns the name of the VolumeSnapshot of pvc taken at t:
// PVC-YYYYMMDDhhmmss (UTC), shortened with a hash when too long for a name.
func SnapshotName(pvc string, t time.Time) string {
	name := pvc + "-" + t.UTC().Format("20060102150405")
	if len(name) > 253 {
		sum := sha256.Sum256([]byte(name))
		name = pvc[:200] + "-" + hex.EncodeToString(sum[:6])
	}
	return name
}

// CreateSnapshot creates the VolumeSnapshot name of PVC namespace/pvc with
// the VolumeSnapshotClass class ("" for the driver's default class),
// labelled as cairn's, and returns at once: WaitSnapshot waits for it.
func (c *Client) CreateSnapshot(ctx context.Context, namespace, pvc, name, class string, labels map[string]string) error {
	d, err := c.clients()
	if err != nil {
		return err
	}
	u := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": SnapshotGroup + "/v1", "kind": "VolumeSnapshot",
		"metadata": map[string]any{"name": name, "namespace": namespace},
		"spec":     map[string]any{"source": map[string]any{"persistentVolumeClaimName": pvc}},
	}}
	if class != "" {
		_ = unstructured.SetNestedField(u.Object, class, "spec", "volumeSnapshotClassName")
	}
	l := map[string]string{LabelManagedBy: ManagedBy, LabelSnapPVC: pvc}
	for k, v := range labels {
		l[k] = v
	}
	u.SetLabels(l)
	if _, err := d.dyn.Resource(gvrSnapshots).Namespace(namespace).Create(ctx, u, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("kube: creating VolumeSnapshot %s/%s of PVC %s: %w", namespace, name, pvc, err)
	}
	return nil
}

// ErrSnapshotNotReady is what WaitSnapshot's timeout error wraps.
var ErrSnapshotNotReady = errors.New("not ready")

// WaitSnapshot waits until the VolumeSnapshot namespace/name is readyToUse
// and bound to a VolumeSnapshotContent with a snapshot handle, polling every
// interval (0: one second), and returns it. After timeout it fails with an
// error naming the snapshot, its PVC and its status.error (the CSI driver's
// message), wrapping ErrSnapshotNotReady.
func (c *Client) WaitSnapshot(ctx context.Context, namespace, name string, timeout, interval time.Duration) (*Snapshot, error) {
	d, err := c.clients()
	if err != nil {
		return nil, err
	}
	if interval <= 0 {
		interval = time.Second
	}
	deadline := time.Now().Add(timeout)
	var last string // what is missing, for the timeout error
	for {
		vs, err := d.dyn.Resource(gvrSnapshots).Namespace(namespace).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return nil, fmt.Errorf("kube: VolumeSnapshot %s/%s: %w", namespace, name, err)
		}
		s := &Snapshot{Namespace: namespace, Name: name}
		s.PVC, _, _ = unstructured.NestedString(vs.Object, "spec", "source", "persistentVolumeClaimName")
		s.Class, _, _ = unstructured.NestedString(vs.Object, "spec", "volumeSnapshotClassName")
		ready, _, _ := unstructured.NestedBool(vs.Object, "status", "readyToUse")
		s.Content, _, _ = unstructured.NestedString(vs.Object, "status", "boundVolumeSnapshotContentName")
		msg, _, _ := unstructured.NestedString(vs.Object, "status", "error", "message")
		switch {
		case !ready && msg != "":
			last = "status.error: " + msg
		case !ready:
			last = "readyToUse is not true (no status.error)"
		case s.Content == "":
			last = "no bound VolumeSnapshotContent"
		default:
			err := c.readContent(ctx, d, s)
			if err == nil && s.Handle != "" {
				if s.RestoreSize == 0 {
					if q, _, _ := unstructured.NestedString(vs.Object, "status", "restoreSize"); q != "" {
						if v, err := resource.ParseQuantity(q); err == nil {
							s.RestoreSize = v.Value()
						}
					}
				}
				return s, nil
			}
			last = fmt.Sprintf("VolumeSnapshotContent %s has no snapshot handle", s.Content)
			if err != nil {
				last = err.Error()
			}
		}
		if !time.Now().Before(deadline) {
			return nil, fmt.Errorf("kube: VolumeSnapshot %s/%s of PVC %s %w after %s: %s", namespace, name, s.PVC, ErrSnapshotNotReady, timeout, last)
		}
		t := time.NewTimer(min(interval, time.Until(deadline)+time.Millisecond))
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("kube: waiting for VolumeSnapshot %s/%s: %w", namespace, name, ctx.Err())
		case <-t.C:
		}
	}
}

// readContent fills in the handle, driver, size and mode of s from its
// VolumeSnapshotContent.
func (c *Client) readContent(ctx context.Context, d *dynClients, s *Snapshot) error {
	vsc, err := d.dyn.Resource(gvrSnapshotContent).Get(ctx, s.Content, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("kube: VolumeSnapshotContent %s of VolumeSnapshot %s/%s: %w", s.Content, s.Namespace, s.Name, err)
	}
	s.Handle, _, _ = unstructured.NestedString(vsc.Object, "status", "snapshotHandle")
	if s.Handle == "" { // a pre-provisioned content
		s.Handle, _, _ = unstructured.NestedString(vsc.Object, "spec", "source", "snapshotHandle")
	}
	s.Driver, _, _ = unstructured.NestedString(vsc.Object, "spec", "driver")
	s.VolumeMode, _, _ = unstructured.NestedString(vsc.Object, "spec", "sourceVolumeMode")
	if n, ok, _ := unstructured.NestedInt64(vsc.Object, "status", "restoreSize"); ok {
		s.RestoreSize = n
	}
	return nil
}

// RetainSnapshot sets the deletionPolicy of the snapshot's
// VolumeSnapshotContent to Retain, so that the CSI snapshot outlives its
// VolumeSnapshot and its namespace (Velero does the same); DeleteSnapshot
// sets it back to Delete.
func (c *Client) RetainSnapshot(ctx context.Context, s *Snapshot) error {
	return c.setDeletionPolicy(ctx, s, "Retain")
}

func (c *Client) setDeletionPolicy(ctx context.Context, s *Snapshot, policy string) error {
	d, err := c.clients()
	if err != nil {
		return err
	}
	patch := []byte(`{"spec":{"deletionPolicy":"` + policy + `"}}`)
	if _, err := d.dyn.Resource(gvrSnapshotContent).Patch(ctx, s.Content, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		return fmt.Errorf("kube: setting deletionPolicy %s on VolumeSnapshotContent %s of %s: %w", policy, s.Content, s, err)
	}
	return nil
}

// DeleteSnapshot removes a snapshot a backup took: its VolumeSnapshot (when
// it still exists and is bound to the recorded content), then its
// VolumeSnapshotContent with deletionPolicy Delete, so that the CSI driver
// deletes the snapshot itself. Objects already gone are not an error.
func (c *Client) DeleteSnapshot(ctx context.Context, s *Snapshot) error {
	d, err := c.clients()
	if err != nil {
		return err
	}
	vs, err := d.dyn.Resource(gvrSnapshots).Namespace(s.Namespace).Get(ctx, s.Name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
	case err != nil:
		return fmt.Errorf("kube: deleting %s: %w", s, err)
	default:
		bound, _, _ := unstructured.NestedString(vs.Object, "status", "boundVolumeSnapshotContentName")
		if s.Content == "" || bound == "" || bound == s.Content {
			if err := d.dyn.Resource(gvrSnapshots).Namespace(s.Namespace).Delete(ctx, s.Name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
				return fmt.Errorf("kube: deleting %s: %w", s, err)
			}
		}
	}
	if s.Content == "" {
		return nil
	}
	if err := c.setDeletionPolicy(ctx, s, "Delete"); err != nil {
		if apierrors.IsNotFound(errors.Unwrap(err)) {
			return nil
		}
		return err
	}
	if err := d.dyn.Resource(gvrSnapshotContent).Delete(ctx, s.Content, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("kube: deleting VolumeSnapshotContent %s of %s: %w", s.Content, s, err)
	}
	return nil
}

// ensureSnapshot makes the recorded snapshot s available as a VolumeSnapshot
// named s.Name in namespace ns: the existing one when it is there, else a
// VolumeSnapshotContent pre-provisioned from the recorded handle (deletion
// policy Retain) and a VolumeSnapshot bound to it. It returns the outcomes
// of the objects it created.
func (c *Client) ensureSnapshot(ctx context.Context, d *dynClients, s *Snapshot, ns string) ([]Outcome, error) {
	_, err := d.dyn.Resource(gvrSnapshots).Namespace(ns).Get(ctx, s.Name, metav1.GetOptions{})
	if err == nil {
		return []Outcome{{Kind: "VolumeSnapshot", Namespace: ns, Name: s.Name, Action: ActionSkipped, Reason: "exists"}}, nil
	}
	if !apierrors.IsNotFound(err) {
		return nil, fmt.Errorf("kube: VolumeSnapshot %s/%s: %w", ns, s.Name, err)
	}
	if s.Handle == "" || s.Driver == "" {
		return nil, fmt.Errorf("kube: %s: the backup recorded no snapshot handle or driver", s)
	}
	sum := sha256.Sum256([]byte(ns + "/" + s.Name + "\x00" + s.Handle))
	content := "cairn-" + hex.EncodeToString(sum[:10])
	vsc := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": SnapshotGroup + "/v1", "kind": "VolumeSnapshotContent",
		"metadata": map[string]any{"name": content, "labels": map[string]any{LabelManagedBy: ManagedBy}},
		"spec": map[string]any{
			"deletionPolicy":    "Retain",
			"driver":            s.Driver,
			"source":            map[string]any{"snapshotHandle": s.Handle},
			"volumeSnapshotRef": map[string]any{"namespace": ns, "name": s.Name},
		},
	}}
	if s.Class != "" {
		_ = unstructured.SetNestedField(vsc.Object, s.Class, "spec", "volumeSnapshotClassName")
	}
	if s.VolumeMode != "" {
		_ = unstructured.SetNestedField(vsc.Object, s.VolumeMode, "spec", "sourceVolumeMode")
	}
	var out []Outcome
	_, err = d.dyn.Resource(gvrSnapshotContent).Create(ctx, vsc, metav1.CreateOptions{})
	switch {
	case err == nil:
		out = append(out, Outcome{Kind: "VolumeSnapshotContent", Name: content, Action: ActionCreated,
			Reason: "pre-provisioned from the snapshot handle of " + s.String()})
	case apierrors.IsAlreadyExists(err): // an earlier restore's
		out = append(out, Outcome{Kind: "VolumeSnapshotContent", Name: content, Action: ActionSkipped, Reason: "exists"})
	default:
		return nil, fmt.Errorf("kube: creating VolumeSnapshotContent %s for %s: %w", content, s, err)
	}
	vs := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": SnapshotGroup + "/v1", "kind": "VolumeSnapshot",
		"metadata": map[string]any{"name": s.Name, "namespace": ns,
			"labels": map[string]any{LabelManagedBy: ManagedBy, LabelSnapPVC: s.PVC}},
		"spec": map[string]any{"source": map[string]any{"volumeSnapshotContentName": content}},
	}}
	if s.Class != "" {
		_ = unstructured.SetNestedField(vs.Object, s.Class, "spec", "volumeSnapshotClassName")
	}
	if _, err := d.dyn.Resource(gvrSnapshots).Namespace(ns).Create(ctx, vs, metav1.CreateOptions{}); err != nil {
		return out, fmt.Errorf("kube: creating VolumeSnapshot %s/%s from content %s: %w", ns, s.Name, content, err)
	}
	return append(out, Outcome{Kind: "VolumeSnapshot", Namespace: ns, Name: s.Name, Action: ActionCreated,
		Reason: "bound to VolumeSnapshotContent " + content}), nil
}

// dnsLabel shortens s to a valid object name part.
func dnsName(s string) string {
	s = strings.ToLower(s)
	s = strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '.' {
			return r
		}
		return '-'
	}, s)
	if len(s) > 200 {
		s = s[:200]
	}
	return strings.Trim(s, "-.")
}
