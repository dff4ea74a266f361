package kube

import (
	"context"
	"fmt"
	"slices"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Attachment is a VolumeAttachment that names a PV: the volume is, or is
// being, attached to Node (or detached from it).
type Attachment struct {
	Name     string // the VolumeAttachment's name
	Node     string
	Attacher string // the CSI driver
	Attached bool   // status.attached
}

func (a Attachment) String() string {
	state := "attaching"
	if a.Attached {
		state = "attached"
	}
	return fmt.Sprintf("%s (%s to node %s)", a.Name, state, a.Node)
}

// Attachments returns the VolumeAttachments that name the PV pv, attached or
// not, sorted by name. A restore into the volume must wait until there are
// none.
func (c *Client) Attachments(ctx context.Context, pv string) ([]Attachment, error) {
	list, err := c.cs.StorageV1().VolumeAttachments().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("kube: listing VolumeAttachments (looking for PV %s): %w", pv, err)
	}
	var out []Attachment
	for _, va := range list.Items {
		if n := va.Spec.Source.PersistentVolumeName; n == nil || *n != pv {
			continue
		}
		out = append(out, Attachment{Name: va.Name, Node: va.Spec.NodeName, Attacher: va.Spec.Attacher, Attached: va.Status.Attached})
	}
	slices.SortFunc(out, func(a, b Attachment) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}
