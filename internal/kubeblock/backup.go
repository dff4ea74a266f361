//go:build ceph

package kubeblock

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"sync"
	"time"

	"github.com/cairn-backup/cairn/blockdiff"
	"github.com/cairn-backup/cairn/blockdiff/rbd"
	"github.com/cairn-backup/cairn/kube"
)

// Connect connects to the Ceph cluster of the flags.
func (c *CephFlags) Connect() (*rbd.Conn, error) {
	return rbd.Connect(rbd.ConnConfig{Conf: c.Conf, User: c.ID, Keyring: c.Keyring, Timeout: c.Timeout})
}

// ImageURL is the rbd URL of a PV's RBD image.
func ImageURL(i *kube.RBDImage) rbd.URL {
	return rbd.URL{Pool: i.Pool, Namespace: i.Namespace, Image: i.Image}
}

// Options tune Backup.
type Options struct {
	Labels         map[string]string // on every version, besides the PVC's (kube.Volume.Labels)
	BlockSize      int               // 0: the repository's
	SnapshotPrefix string            // "" is rbd's default (b-)
	Parallel       int               // volumes at once; < 1 is 1
	Logger         *slog.Logger      // nil: discard
}

// Result is the backup of one selected PVC.
type Result struct {
	Volume  kube.Volume
	Image   string            // POOL/IMAGE of its RBD image; "" when it has none
	Backup  *rbd.BackupResult // nil when it failed
	Err     error             // why it was not backed up
	Seconds float64
}

// NeedsCeph reports whether any of vols is an RBD image (and so a Ceph
// connection is needed).
func NeedsCeph(vols []kube.Volume) bool {
	for _, v := range vols {
		if v.Err == nil && v.RBD != nil {
			return true
		}
	}
	return false
}

// Backup backs up the RBD image of each volume (kube.Client.Select) as the
// block volume NAMESPACE/PVC with the PVC's labels: an RBD snapshot named
// SnapshotPrefix+timestamp, the changes since the newest valid version whose
// snapshot still exists, and rotation of that prefix's older snapshots.
// Volumes that did not resolve, or that are not RBD images, fail alone; the
// results are in the order of vols. conn may be nil when NeedsCeph is false.
func Backup(ctx context.Context, conn *rbd.Conn, repo *blockdiff.Repository, vols []kube.Volume, o Options) []Result {
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	out := make([]Result, len(vols))
	sem := make(chan struct{}, max(o.Parallel, 1))
	var wg sync.WaitGroup
	for i, v := range vols {
		res := &out[i]
		res.Volume = v
		if v.RBD != nil {
			res.Image = ImageURL(v.RBD).Spec()
		}
		switch {
		case v.Err != nil:
			res.Err = v.Err
		case v.RBD == nil:
			res.Err = &kube.VolumeError{Namespace: v.Namespace, PVC: v.PVC, PV: v.PV, Driver: v.Driver,
				Err: fmt.Errorf("not an RBD image but the ZFS dataset %s: back it up with cairn-zrepl", v.ZFS.Dataset)}
		}
		if res.Err != nil {
			log.Error("PVC not backed up", "pvc", v.Name(), "err", res.Err)
			continue
		}
		labels := maps.Clone(o.Labels)
		if labels == nil {
			labels = map[string]string{}
		}
		maps.Copy(labels, v.Labels())
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			u := ImageURL(v.RBD)
			start := time.Now()
			b, err := conn.Backup(ctx, repo, u, rbd.BackupOptions{Volume: v.Name(), Labels: labels, BlockSize: o.BlockSize,
				SnapshotPrefix: o.SnapshotPrefix, Logger: log.With("image", u.Spec(), "volume", v.Name())})
			res.Seconds = time.Since(start).Seconds()
			if err != nil {
				res.Err = err
				log.Error("volume backup failed", "volume", v.Name(), "image", u.Spec(), "err", err)
				return
			}
			res.Backup = b
			log.Info("volume backed up", "volume", v.Name(), "image", u.Spec(), "version", b.Version.ID, "base", b.Base,
				"full_reason", b.FullReason, "bytes_read", b.BytesRead)
		})
	}
	wg.Wait()
	return out
}
