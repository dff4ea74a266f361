//go:build ceph

package main

import (
	"context"

	"github.com/cairn-backup/cairn/blockdiff"
	"github.com/cairn-backup/cairn/blockdiff/rbd"
	"github.com/cairn-backup/cairn/internal/cli"
	"github.com/cairn-backup/cairn/internal/kubeblock"
	"github.com/cairn-backup/cairn/kube"
	_ "github.com/cairn-backup/cairn/objstore/rados" // registers rados:// for --repo
)

// cephBuilt says whether this build has the ceph tag.
const cephBuilt = true

// errNoCeph is never returned by a build with the ceph tag.
var errNoCeph error

// checkSnapshotPrefix is --snapshot-prefix's check.
func checkSnapshotPrefix(p string) error {
	if err := rbd.CheckSnapshotPrefix(p); err != nil {
		return cli.Usagef("--snapshot-prefix: %v", err)
	}
	return nil
}

// backupData backs up the RBD images of vols as cairn-block backup-all
// --selector does (internal/kubeblock) and returns their records.
func (a *app) backupData(ctx context.Context, r *blockdiff.Repository, vols []kube.Volume, o *backupOptions) ([]volumeRecord, error) {
	var conn *rbd.Conn
	if kubeblock.NeedsCeph(vols) {
		var err error
		if conn, err = o.ceph.Connect(); err != nil {
			return nil, err
		}
		defer conn.Close()
	}
	results := kubeblock.Backup(ctx, conn, r, vols, kubeblock.Options{Labels: o.labels, BlockSize: o.blockSize,
		SnapshotPrefix: o.snapshotPrefix, Parallel: o.parallel, Logger: a.Log})
	recs := make([]volumeRecord, len(results))
	for i, res := range results {
		v := res.Volume
		rec := volumeRecord{Namespace: v.Namespace, PVC: v.PVC, PV: v.PV, Driver: v.Driver, StorageClass: v.StorageClass, Mode: volumesData}
		if v.RBD != nil {
			rec.Image = imageJSON(v.RBD)
		}
		if res.Err != nil {
			rec.Error = res.Err.Error()
			a.RecordFailedBackup(v.Name())
		} else {
			rec.Version, rec.Size = res.Backup.Version.ID, res.Backup.Version.Size
			a.RecordVersion(res.Backup.Version)
		}
		recs[i] = rec
	}
	return recs, nil
}

// restoreImage restores the block version of rec into the new image img.
func (vd *volumeData) restoreImage(ctx context.Context, rec volumeRecord, img *rbdImageJSON) error {
	if vd.conn == nil {
		conn, err := vd.ceph.Connect()
		if err != nil {
			return err
		}
		vd.conn = conn
	}
	conn := vd.conn.(*rbd.Conn)
	u := rbd.URL{Pool: img.Pool, Namespace: img.Namespace, Image: img.Image}
	bar := vd.a.NewProgress("restore " + rec.Version + " into " + u.Spec())
	// Force: a PVC that does not exist owns no image of this name but an
	// interrupted restore's
	err := conn.Restore(ctx, vd.r, rec.Version, u, rbd.RestoreOptions{Force: true, Progress: bar.Bytes})
	bar.Finish()
	if err == nil {
		vd.a.Log.Info("volume data restored", "pvc", rec.Namespace+"/"+rec.PVC, "version", rec.Version, "image", u.Spec())
	}
	return err
}

func imageJSON(i *kube.RBDImage) *rbdImageJSON {
	return &rbdImageJSON{Pool: i.Pool, Namespace: i.Namespace, Image: i.Image, ClusterID: i.ClusterID}
}
