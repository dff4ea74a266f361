//go:build ceph

package main

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/cairn-backup/cairn/blockdiff"
	"github.com/cairn-backup/cairn/blockdiff/rbd"
	"github.com/cairn-backup/cairn/internal/cli"
	"github.com/cairn-backup/cairn/internal/kubeblock"
	"github.com/cairn-backup/cairn/kube"
)

// checkSnapshotPrefix is --snapshot-prefix's check.
func checkSnapshotPrefix(p string) error {
	if err := rbd.CheckSnapshotPrefix(p); err != nil {
		return cli.Usagef("--snapshot-prefix: %v", err)
	}
	return nil
}

// pvcResultJSON is one PVC of backup-all --selector's summary: the image's
// result plus where it came from.
type pvcResultJSON struct {
	Namespace    string `json:"namespace"`
	PVC          string `json:"pvc"`
	PV           string `json:"pv,omitempty"`
	Driver       string `json:"driver,omitempty"`
	StorageClass string `json:"storage_class,omitempty"`
	imageResultJSON
}

// kubeBackupAllJSON is backup-all --selector's --json summary.
type kubeBackupAllJSON struct {
	Selector      string          `json:"selector"`
	Namespaces    []string        `json:"namespaces,omitempty"`
	AllNamespaces bool            `json:"all_namespaces,omitempty"`
	Volumes       []pvcResultJSON `json:"volumes"`
	Succeeded     int             `json:"succeeded"`
	Failed        int             `json:"failed"`
}

// backupAllKube is backup-all --selector: every selected PVC's RBD image is
// backed up as the volume NAMESPACE/PVC, with the PVC's labels.
func (a *app) backupAllKube(cmd *cobra.Command, o *backupAllOptions, sel kube.Selector) error {
	ctx := cmd.Context()
	kc, err := kube.NewFromConfigPath(o.kube.kubeconfig)
	if err != nil {
		return err
	}
	vols, err := kc.Select(ctx, sel)
	if err != nil {
		return err
	}
	a.Log.Info("backup-all", "selector", sel.Labels, "namespaces", sel.Namespaces, "all_namespaces", sel.AllNamespaces, "pvcs", len(vols))
	if len(vols) == 0 {
		a.Log.Warn("no PVC matches the selector", "selector", sel.Labels, "namespaces", sel.Namespaces, "all_namespaces", sel.AllNamespaces)
	}
	sum := kubeBackupAllJSON{Selector: sel.Labels, Namespaces: sel.Namespaces, AllNamespaces: sel.AllNamespaces,
		Volumes: make([]pvcResultJSON, len(vols))}
	for i, v := range vols {
		sum.Volumes[i] = pvcResultJSON{Namespace: v.Namespace, PVC: v.PVC, PV: v.PV, Driver: v.Driver, StorageClass: v.StorageClass,
			imageResultJSON: imageResultJSON{Volume: v.Name()}}
		if v.RBD != nil {
			sum.Volumes[i].Image = rbdURL(v.RBD).Spec()
		}
	}
	var conn *rbd.Conn
	if kubeblock.NeedsCeph(vols) {
		if conn, err = o.ceph.connect(); err != nil {
			return err
		}
		defer conn.Close()
	}
	err = a.WithRepo(ctx, func(r *blockdiff.Repository) error {
		// the PVCs' backups are internal/kubeblock's, which cairn-kube backup --volumes data shares
		results := kubeblock.Backup(ctx, conn, r, vols, kubeblock.Options{Labels: o.labels, BlockSize: o.blockSize,
			SnapshotPrefix: o.snapshotPrefix, Parallel: o.parallel, Logger: a.Log})
		for i, res := range results {
			sum.Volumes[i].imageResultJSON = imageResult(res)
			if res.Err != nil {
				a.RecordFailedBackup(res.Volume.Name())
			} else {
				a.RecordVersion(res.Backup.Version)
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	return a.summarizeKube(sum)
}

// imageResult is one PVC's entry of the summary.
func imageResult(res kubeblock.Result) imageResultJSON {
	out := imageResultJSON{Image: res.Image, Volume: res.Volume.Name(), Seconds: res.Seconds}
	if res.Err != nil {
		out.Error = res.Err.Error()
		return out
	}
	b, v := res.Backup, res.Backup.Version
	out.OK, out.Version, out.Snapshot, out.Base, out.FullReason = true, v.ID, b.Snapshot, b.Base, b.FullReason
	out.Size, out.BytesRead, out.BytesWritten, out.Removed = v.Size, b.BytesRead, v.Stats.BytesWritten, b.RemovedSnapshots
	return out
}

func rbdURL(i *kube.RBDImage) rbd.URL { return kubeblock.ImageURL(i) }

// summarizeKube prints backup-all --selector's result and returns its error:
// exit 3 (partial) when some PVCs failed and others succeeded, 1 when all
// failed.
func (a *app) summarizeKube(sum kubeBackupAllJSON) error {
	for _, r := range sum.Volumes {
		if r.OK {
			sum.Succeeded++
		} else {
			sum.Failed++
		}
	}
	if a.JSON {
		if err := a.WriteJSON(sum); err != nil {
			return err
		}
	} else {
		for _, r := range sum.Volumes {
			if r.OK {
				fmt.Fprintf(a.IO.Out, "ok\t%s\t%s\t%s\tread %s\n", r.Volume, r.Image, r.Version, cli.HumanBytes(r.BytesRead))
			} else {
				fmt.Fprintf(a.IO.Out, "FAILED\t%s\t%s\n", r.Volume, r.Error)
			}
		}
	}
	return cli.Outcome("backup-all", "PVCs", sum.Succeeded, sum.Failed)
}

// restorePVC is restore-pvc.
func (a *app) restorePVC(cmd *cobra.Command, o *restorePVCOptions, id string) error {
	ctx := cmd.Context()
	kc, err := kube.NewFromConfigPath(o.kubeconfig)
	if err != nil {
		return err
	}
	v, err := kc.Resolve(ctx, o.namespace, o.pvc)
	if err != nil {
		return err
	}
	if v.RBD == nil {
		return &kube.VolumeError{Namespace: v.Namespace, PVC: v.PVC, PV: v.PV, Driver: v.Driver,
			Err: errors.New("restore-pvc restores RBD images; this PVC's volume is a ZFS dataset (" + v.ZFS.Dataset + ")")}
	}
	at, err := kc.Attachments(ctx, v.PV)
	if err != nil {
		return err
	}
	if len(at) > 0 {
		if !o.force {
			return fmt.Errorf("restore-pvc: PVC %s (PV %s) is in use: VolumeAttachment %s; stop what uses it (scale the workload to 0) or give --force",
				v.Name(), v.PV, at[0])
		}
		a.Log.Warn("restoring into an attached volume (--force)", "pvc", v.Name(), "pv", v.PV, "attachment", at[0].String())
	}
	u := rbdURL(v.RBD)
	conn, err := o.ceph.connect()
	if err != nil {
		return err
	}
	defer conn.Close()
	return a.WithRepo(ctx, func(r *blockdiff.Repository) error {
		bar := a.NewProgress("restore " + id + " into " + v.Name())
		err := conn.Restore(ctx, r, id, u, rbd.RestoreOptions{IntoExisting: true, Progress: bar.Bytes})
		bar.Finish()
		if err != nil {
			return fmt.Errorf("restore-pvc %s into PVC %s (%s): %w", id, v.Name(), u, err)
		}
		a.Log.Info("restored into PVC", "version", id, "pvc", v.Name(), "pv", v.PV, "image", u.Spec())
		if a.JSON {
			return a.WriteJSON(map[string]string{"version": id, "namespace": v.Namespace, "pvc": v.PVC, "pv": v.PV, "image": u.Spec()})
		}
		return nil
	})
}
