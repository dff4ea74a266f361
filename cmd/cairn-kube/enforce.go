package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/cairn-backup/cairn/blockdiff"
	"github.com/cairn-backup/cairn/kube"
	"github.com/cairn-backup/cairn/retention"
)

// enforce is enforce's policy run (repocli.Mount.Enforce): the versions the
// policy does not keep are removed, and with each objects version the
// VolumeSnapshots it recorded (--volumes snapshot), which nothing else
// would ever delete.
func (a *app) enforce(ctx context.Context, r *blockdiff.Repository, p retention.Policy, opts blockdiff.EnforceOptions) (*blockdiff.EnforceResult, error) {
	if opts.DryRun {
		return r.EnforcePolicy(ctx, p, opts)
	}
	dry := opts
	dry.DryRun = true
	plan, err := r.EnforcePolicy(ctx, p, dry)
	if err != nil {
		return plan, err
	}
	snaps := map[string][]*kube.Snapshot{} // version -> its snapshots
	for _, ve := range plan.Volumes {
		if !strings.HasPrefix(ve.Volume, "k8s/") {
			continue
		}
		for _, d := range ve.Removed {
			ss, err := a.recordedSnapshots(ctx, r, d.ID)
			if err != nil {
				a.Log.Warn("cannot read the snapshots recorded by a version enforce removes; delete them by hand",
					"version", d.ID, "err", err)
				continue
			}
			if len(ss) > 0 {
				snaps[d.ID] = ss
			}
		}
	}
	opts.Now = plan.Now // the same decisions
	res, err := r.EnforcePolicy(ctx, p, opts)
	if res == nil || len(snaps) == 0 {
		return res, err
	}
	kc, kerr := a.kube()
	if kerr != nil {
		return res, errors.Join(err, fmt.Errorf("deleting the VolumeSnapshots of removed versions: %w", kerr))
	}
	var errs []error
	deleted := 0
	for _, ve := range res.Volumes {
		for _, d := range ve.Removed {
			if d.Error != "" {
				continue // still there, and so are its snapshots
			}
			for _, s := range snaps[d.ID] {
				if derr := kc.DeleteSnapshot(ctx, s); derr != nil {
					errs = append(errs, fmt.Errorf("version %s: %w", d.ID, derr))
					continue
				}
				deleted++
				a.Log.Info("snapshot deleted with its version", "version", d.ID, "snapshot", s.String(), "content", s.Content)
			}
		}
	}
	if len(errs) > 0 {
		err = errors.Join(err, fmt.Errorf("enforce: %d VolumeSnapshots of removed versions not deleted: %w", len(errs), errors.Join(errs...)))
	}
	return res, err
}

// recordedSnapshots returns the VolumeSnapshots an objects version records.
func (a *app) recordedSnapshots(ctx context.Context, r *blockdiff.Repository, id string) ([]*kube.Snapshot, error) {
	v, err := r.Version(ctx, id)
	if err != nil {
		return nil, err
	}
	if v.Kind != blockdiff.KindStream || v.Labels[labelVolumes] != volumesSnapshot || v.Status != blockdiff.StatusValid {
		return nil, nil
	}
	var buf bytes.Buffer
	if err := r.RestoreStream(ctx, id, &buf, blockdiff.StreamRestoreOptions{}); err != nil {
		return nil, err
	}
	objs, err := kube.ReadArchive(&buf)
	if err != nil {
		return nil, err
	}
	_, recs, err := splitRecords(objs)
	if err != nil {
		return nil, err
	}
	var out []*kube.Snapshot
	for _, rec := range recs {
		if rec.Snapshot != nil {
			out = append(out, rec.Snapshot)
		}
	}
	return out, nil
}
