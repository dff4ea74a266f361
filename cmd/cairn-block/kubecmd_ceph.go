//go:build ceph

package main

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/cairn-backup/cairn/blockdiff"
	"github.com/cairn-backup/cairn/blockdiff/rbd"
	"github.com/cairn-backup/cairn/internal/cli"
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
	if slicesAny(vols, func(v kube.Volume) bool { return v.RBD != nil }) {
		if conn, err = o.ceph.connect(); err != nil {
			return err
		}
		defer conn.Close()
	}
	err = a.WithRepo(ctx, func(r *blockdiff.Repository) error {
		sem := make(chan struct{}, o.parallel)
		var wg sync.WaitGroup
		for i, v := range vols {
			res := &sum.Volumes[i]
			switch {
			case v.Err != nil:
				res.Error = v.Err.Error()
			case v.RBD == nil:
				res.Error = (&kube.VolumeError{Namespace: v.Namespace, PVC: v.PVC, PV: v.PV, Driver: v.Driver,
					Err: fmt.Errorf("not an RBD image but the ZFS dataset %s: back it up with cairn-zrepl", v.ZFS.Dataset)}).Error()
			}
			if res.Error != "" {
				a.RecordFailedBackup(res.Volume)
				a.Log.Error("PVC not backed up", "pvc", v.Name(), "err", res.Error)
				continue
			}
			labels := maps.Clone(o.labels)
			if labels == nil {
				labels = map[string]string{}
			}
			maps.Copy(labels, v.Labels())
			sem <- struct{}{}
			wg.Go(func() {
				defer func() { <-sem }()
				res.imageResultJSON = a.backupRBDVolume(ctx, conn, r, o, rbdURL(v.RBD), v.Name(), labels)
			})
		}
		wg.Wait()
		return nil
	})
	if err != nil {
		return err
	}
	return a.summarizeKube(sum)
}

func slicesAny[T any](s []T, f func(T) bool) bool {
	for _, x := range s {
		if f(x) {
			return true
		}
	}
	return false
}

func rbdURL(i *kube.RBDImage) rbd.URL {
	return rbd.URL{Pool: i.Pool, Namespace: i.Namespace, Image: i.Image}
}

// backupRBDVolume backs up the image u as volume for backup-all and reports
// the outcome.
func (a *app) backupRBDVolume(ctx context.Context, conn *rbd.Conn, r *blockdiff.Repository, o *backupAllOptions,
	u rbd.URL, volume string, labels map[string]string) imageResultJSON {
	res := imageResultJSON{Image: u.Spec(), Volume: volume}
	start := time.Now()
	out, err := conn.Backup(ctx, r, u, rbd.BackupOptions{Volume: volume, Labels: labels, BlockSize: o.blockSize,
		SnapshotPrefix: o.snapshotPrefix, Logger: a.Log.With("image", u.Spec(), "volume", volume)})
	res.Seconds = time.Since(start).Seconds()
	if err != nil {
		res.Error = err.Error()
		a.RecordFailedBackup(volume)
		a.Log.Error("volume backup failed", "volume", volume, "image", u.Spec(), "err", err)
		return res
	}
	v := out.Version
	a.RecordVersion(v)
	res.OK, res.Version, res.Snapshot, res.Base, res.FullReason = true, v.ID, out.Snapshot, out.Base, out.FullReason
	res.Size, res.BytesRead, res.BytesWritten, res.Removed = v.Size, out.BytesRead, v.Stats.BytesWritten, out.RemovedSnapshots
	a.Log.Info("volume backed up", "volume", volume, "image", u.Spec(), "version", v.ID, "base", out.Base,
		"full_reason", out.FullReason, "bytes_read", out.BytesRead)
	return res
}

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
	if sum.Failed == 0 {
		return nil
	}
	err := fmt.Errorf("backup-all: %d of %d PVCs failed", sum.Failed, len(sum.Volumes))
	if sum.Succeeded > 0 {
		return cli.WithExitCode(cli.ExitPartial, err)
	}
	return err
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
