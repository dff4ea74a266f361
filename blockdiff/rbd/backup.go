//go:build ceph

package rbd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"strconv"
	"time"

	librados "github.com/ceph/go-ceph/rados"
	librbd "github.com/ceph/go-ceph/rbd"

	"github.com/cairn-backup/cairn/blockdiff"
)

// Labels that Backup records on every version, so that the next backup finds
// its base snapshot.
const (
	LabelImage      = "rbd-image"       // POOL/IMAGE or POOL/NAMESPACE/IMAGE
	LabelImageID    = "rbd-image-id"    // the image's RBD ID (a recreated image has a new one)
	LabelSnapshot   = "rbd-snapshot"    // the snapshot that was backed up
	LabelSnapshotID = "rbd-snapshot-id" // its snapshot ID (a recreated snapshot has a new one)
)

// DefaultSnapshotPrefix is the prefix of the snapshots Backup creates and
// rotates, as in Benji's helper scripts.
const DefaultSnapshotPrefix = "b-"

// SnapshotTimeFormat is the UTC timestamp after the prefix of the snapshots
// Backup creates (b-20260102T030405Z).
const SnapshotTimeFormat = "20060102T150405Z"

// BackupOptions describe one backup of an RBD image.
type BackupOptions struct {
	Volume string            // the version's volume name; required
	Labels map[string]string // extra labels (the rbd-* labels are added)
	// BlockSize of the version (0: the repository's). A base of another
	// block size is not used.
	BlockSize int
	// VerifyPercent raises the share of unchanged blocks re-read and
	// compared with the base (default: Benji's sample).
	VerifyPercent float64
	// SnapshotPrefix names the snapshots Backup creates and rotates
	// (default DefaultSnapshotPrefix).
	SnapshotPrefix string
	// Progress is passed to blockdiff.Backup.
	Progress func(done, total int64)
	// Logger receives progress messages; nil discards them.
	Logger *slog.Logger
	// Now is the clock for snapshot names (default time.Now).
	Now func() time.Time
}

// BackupResult says what Backup did.
type BackupResult struct {
	Version      *blockdiff.Version // the new, valid version
	Snapshot     string             // the snapshot that was backed up
	Base         string             // the base version's ID; "" for a full read
	BaseSnapshot string             // the base version's snapshot
	// FullReason says why the backup read the whole image: "no base" (no
	// valid version of the volume whose snapshot still exists), or the hint
	// verification failure that made it retry without hints. "" for a
	// differential backup.
	FullReason       string
	BytesRead        int64    // bytes read from the cluster
	RemovedSnapshots []string // older prefix snapshots removed after success
}

// Backup backs up an RBD image into repo, Benji's helper workflow built in.
//
// For rbd://POOL/IMAGE it creates the snapshot PREFIX<UTC timestamp>; for
// rbd://POOL/IMAGE@SNAP it uses SNAP. It then looks for the newest valid
// version of opts.Volume whose recorded snapshot (name and ID) still exists on
// the image and is older than this one, and backs up with the snapshots'
// diff as hints (hint verification applies; a mismatch retries as a full
// read); without such a version it reads the whole image (allocated extents
// only). Only when the new version is valid does it remove the image's older
// snapshots with the prefix, and only those it may own: when it created the
// snapshot itself. When the backup fails, the snapshot it created is removed
// again, so the previous one stays the base for the next run.
func (c *Conn) Backup(ctx context.Context, repo *blockdiff.Repository, u URL, opts BackupOptions) (*BackupResult, error) {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if opts.SnapshotPrefix == "" {
		opts.SnapshotPrefix = DefaultSnapshotPrefix
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Volume == "" {
		return nil, errors.New("rbd: backup: no volume name")
	}
	if err := CheckSnapshotPrefix(opts.SnapshotPrefix); err != nil {
		return nil, err
	}
	ioctx, err := c.ioctx(u)
	if err != nil {
		return nil, err
	}
	defer ioctx.Destroy()
	img, err := librbd.OpenImage(ioctx, u.Image, librbd.NoSnapshot)
	if err != nil {
		return nil, openErr(ioctx, URL{Pool: u.Pool, Namespace: u.Namespace, Image: u.Image}, err)
	}
	defer img.Close()
	imageID, err := img.GetId()
	if err != nil {
		return nil, fmt.Errorf("rbd: ID of %s: %w", u.Spec(), err)
	}

	created := false
	if u.Snapshot == "" {
		name, err := createSnapshot(img, opts.SnapshotPrefix, opts.Now().UTC())
		if err != nil {
			return nil, fmt.Errorf("rbd: snapshot of %s: %w", u.Spec(), err)
		}
		u.Snapshot, created = name, true
		log.Info("snapshot created", "image", u.Spec(), "snapshot", name)
	}
	res, err := c.backupSnapshot(ctx, repo, img, imageID, u, opts, log)
	if err != nil {
		if created {
			if rerr := img.GetSnapshot(u.Snapshot).Remove(); rerr != nil {
				log.Warn("could not remove the snapshot of the failed backup", "snapshot", u.String(), "err", rerr)
			} else {
				log.Info("snapshot of the failed backup removed", "snapshot", u.String())
			}
		}
		return nil, err
	}
	if created {
		res.RemovedSnapshots, err = rotate(img, opts.SnapshotPrefix, u.Snapshot)
		for _, s := range res.RemovedSnapshots {
			log.Info("older snapshot removed", "image", u.Spec(), "snapshot", s)
		}
		if err != nil { // the backup is valid: report, do not fail
			log.Warn("snapshot rotation incomplete", "image", u.Spec(), "err", err)
		}
	}
	return res, nil
}

// createSnapshot creates PREFIX<timestamp>, with a -N suffix when a snapshot
// of that second exists already.
func createSnapshot(img *librbd.Image, prefix string, now time.Time) (string, error) {
	base := prefix + now.Format(SnapshotTimeFormat)
	for i := 0; i < 100; i++ {
		name := base
		if i > 0 {
			name += "-" + strconv.Itoa(i)
		}
		_, err := img.CreateSnapshot(name)
		if errors.Is(err, librbd.ErrExist) {
			continue
		}
		if err != nil {
			return "", err
		}
		return name, nil
	}
	return "", fmt.Errorf("snapshots %s and 99 suffixed ones exist", base)
}

// rotate removes the snapshots with prefix that are older (by snapshot ID)
// than keep: only names PREFIX<timestamp>[-N] (ownSnapshot), so that the
// rotation of prefix b- never removes b-meta-... snapshots of another
// repository's backups.
func rotate(img *librbd.Image, prefix, keep string) ([]string, error) {
	snaps, err := img.GetSnapshotNames()
	if err != nil {
		return nil, fmt.Errorf("listing snapshots: %w", err)
	}
	var keepID uint64
	found := false
	for _, s := range snaps {
		if s.Name == keep {
			keepID, found = s.Id, true
		}
	}
	if !found {
		return nil, fmt.Errorf("snapshot %q vanished", keep)
	}
	var removed []string
	var errs []error
	for _, s := range snaps {
		if s.Id >= keepID || !ownSnapshot(prefix, s.Name) {
			continue
		}
		snap := img.GetSnapshot(s.Name)
		if p, _ := snap.IsProtected(); p {
			errs = append(errs, fmt.Errorf("snapshot %q is protected (it has clones): kept", s.Name))
			continue
		}
		if err := snap.Remove(); err != nil {
			errs = append(errs, fmt.Errorf("removing snapshot %q: %w", s.Name, err))
			continue
		}
		removed = append(removed, s.Name)
	}
	return removed, errors.Join(errs...)
}

// backupSnapshot backs up snapshot u.Snapshot of img.
func (c *Conn) backupSnapshot(ctx context.Context, repo *blockdiff.Repository, img *librbd.Image, imageID string,
	u URL, opts BackupOptions, log *slog.Logger) (*BackupResult, error) {
	snaps, err := img.GetSnapshotNames()
	if err != nil {
		return nil, fmt.Errorf("rbd: snapshots of %s: %w", u.Spec(), err)
	}
	ids := map[string]uint64{}
	for _, s := range snaps {
		ids[s.Name] = s.Id
	}
	snapID, ok := ids[u.Snapshot]
	if !ok {
		return nil, fmt.Errorf("rbd: image %s has no snapshot %q: %w", u.Spec(), u.Snapshot, librbd.ErrNotFound)
	}
	src, err := c.OpenSnapshot(u)
	if err != nil {
		return nil, err
	}
	defer src.Close()

	bs := opts.BlockSize
	if bs == 0 {
		bs = repo.BlockSize()
	}
	res := &BackupResult{Snapshot: u.Snapshot}
	base, err := findBase(ctx, repo, opts.Volume, u.Spec(), imageID, ids, snapID, bs)
	if err != nil {
		return nil, err
	}
	bopts := blockdiff.BackupOptions{Volume: opts.Volume, Labels: maps.Clone(opts.Labels), BlockSize: opts.BlockSize,
		VerifyPercent: opts.VerifyPercent, Progress: opts.Progress}
	if bopts.Labels == nil {
		bopts.Labels = map[string]string{}
	}
	bopts.Labels[LabelImage] = u.Spec()
	bopts.Labels[LabelImageID] = imageID
	bopts.Labels[LabelSnapshot] = u.Snapshot
	bopts.Labels[LabelSnapshotID] = strconv.FormatUint(snapID, 10)
	if base == nil {
		res.FullReason = "no base"
	} else {
		res.BaseSnapshot = base.Labels[LabelSnapshot]
		hints, err := src.Changes(res.BaseSnapshot)
		if err != nil {
			return nil, err
		}
		res.Base, bopts.Base, bopts.Hints = base.ID, base.ID, hints
		log.Info("differential backup", "image", u.Spec(), "snapshot", u.Snapshot, "base", base.ID,
			"base_snapshot", res.BaseSnapshot, "changed_extents", len(hints))
	}
	v, err := repo.Backup(ctx, src, bopts)
	if errors.Is(err, blockdiff.ErrHintMismatch) {
		log.Warn("the diff missed a change: backing up with a full read", "image", u.Spec(), "err", err)
		res.FullReason = "hint verification failed: " + err.Error()
		res.Base, res.BaseSnapshot, bopts.Base, bopts.Hints = "", "", "", nil
		v, err = repo.Backup(ctx, src, bopts)
	}
	if err != nil {
		return nil, err
	}
	res.Version, res.BytesRead = v, src.BytesRead()
	return res, nil
}

// findBase returns the newest valid version of volume, of block size bs, taken
// from a snapshot of this image that still exists (same name and ID) and is
// older than snapID; nil when there is none.
func findBase(ctx context.Context, repo *blockdiff.Repository, volume, spec, imageID string,
	ids map[string]uint64, snapID uint64, bs int) (*blockdiff.Version, error) {
	vs, err := repo.List(ctx, blockdiff.Filter{Volume: volume})
	if err != nil {
		return nil, err
	}
	for i := len(vs) - 1; i >= 0; i-- {
		v := vs[i]
		if v.Status != blockdiff.StatusValid || v.Kind != blockdiff.KindBlock || v.BlockSize != bs ||
			v.Labels[LabelImage] != spec || v.Labels[LabelImageID] != imageID {
			continue
		}
		id, ok := ids[v.Labels[LabelSnapshot]]
		if !ok || strconv.FormatUint(id, 10) != v.Labels[LabelSnapshotID] || id >= snapID {
			continue
		}
		return v, nil
	}
	return nil, nil
}

// ListImages returns the names of the images in pool (and namespace ns).
func (c *Conn) ListImages(pool, ns string) ([]string, error) {
	ioctx, err := c.ioctx(URL{Pool: pool, Namespace: ns})
	if err != nil {
		return nil, err
	}
	defer ioctx.Destroy()
	names, err := librbd.GetImageNames(ioctx)
	if err != nil {
		return nil, fmt.Errorf("rbd: listing the images of pool %q: %w", pool, err)
	}
	return names, nil
}

// RestoreOptions tune Restore.
type RestoreOptions struct {
	// Force restores over an existing image (resized to the version's
	// size). Without it an existing image is refused.
	Force bool
	// AllowInvalid restores a version that is not valid, for salvage.
	AllowInvalid bool
	// IntoExisting writes into an image that must exist already (the image
	// of a PVC): it is never created or resized, an image smaller than the
	// version is refused (ErrTargetTooSmall), and a larger one keeps its
	// bytes past the version's size. Force is implied.
	IntoExisting bool
	// Progress is passed to blockdiff.Restore.
	Progress func(done, total int64)
}

// ErrTargetTooSmall is returned (wrapped) by Restore with
// RestoreOptions.IntoExisting when the image is smaller than the version.
var ErrTargetTooSmall = errors.New("rbd: target image is smaller than the version")

// ErrImageExists is returned (wrapped) by Restore when the destination image
// exists and RestoreOptions.Force is not set.
var ErrImageExists = errors.New("rbd: image exists (restore over it with force)")

// Restore writes version id of repo to the image u names (no snapshot). A
// missing image is created with the version's size and the pool's default
// features and written sparse (zero blocks are skipped: a new image reads
// zeros); an existing one is refused unless opts.Force, and then resized and
// written whole.
func (c *Conn) Restore(ctx context.Context, repo *blockdiff.Repository, id string, u URL, opts RestoreOptions) error {
	if u.Snapshot != "" {
		return fmt.Errorf("rbd: restore to %s: cannot write a snapshot; name the image", u)
	}
	v, err := repo.Version(ctx, id)
	if err != nil {
		return err
	}
	if v.Status != blockdiff.StatusValid && !opts.AllowInvalid {
		return fmt.Errorf("rbd: restore %s: status is %s: %w", id, v.Status, blockdiff.ErrNotValid)
	}
	ioctx, err := c.ioctx(u)
	if err != nil {
		return err
	}
	defer ioctx.Destroy()
	var img *librbd.Image
	var sparse bool
	if opts.IntoExisting {
		img, err = openExisting(ioctx, u, v.Size)
	} else {
		img, sparse, err = openDest(ioctx, u, v.Size, opts.Force)
	}
	if err != nil {
		return err
	}
	err = repo.Restore(ctx, id, img, blockdiff.RestoreOptions{Sparse: sparse, AllowInvalid: opts.AllowInvalid, Progress: opts.Progress})
	if err == nil {
		if ferr := img.Flush(); ferr != nil {
			err = fmt.Errorf("rbd: flush %s: %w", u, ferr)
		}
	}
	if cerr := img.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("rbd: close %s: %w", u, cerr)
	}
	return err
}

// openExisting opens the existing image u for a restore of size bytes,
// refusing a smaller one.
func openExisting(ioctx *librados.IOContext, u URL, size int64) (*librbd.Image, error) {
	img, err := librbd.OpenImage(ioctx, u.Image, librbd.NoSnapshot)
	if err != nil {
		return nil, openErr(ioctx, u, err)
	}
	cur, err := img.GetSize()
	if err != nil {
		img.Close()
		return nil, fmt.Errorf("rbd: size of %s: %w", u, err)
	}
	if int64(cur) < size {
		img.Close()
		return nil, fmt.Errorf("rbd: restore to %s: %w (%d bytes, the version %d)", u, ErrTargetTooSmall, cur, size)
	}
	return img, nil
}

// openDest opens or creates the destination image of a restore and says
// whether zero blocks may be skipped.
func openDest(ioctx *librados.IOContext, u URL, size int64, force bool) (*librbd.Image, bool, error) {
	img, err := librbd.OpenImage(ioctx, u.Image, librbd.NoSnapshot)
	if err == nil {
		if !force {
			img.Close()
			return nil, false, fmt.Errorf("rbd: restore to %s: %w", u, ErrImageExists)
		}
		cur, err := img.GetSize()
		if err == nil && int64(cur) != size {
			err = img.Resize(uint64(size))
		}
		if err != nil {
			img.Close()
			return nil, false, fmt.Errorf("rbd: resizing %s to %d bytes: %w", u, size, err)
		}
		return img, false, nil
	}
	if !errors.Is(err, librbd.ErrNotFound) && !errors.Is(err, librbd.ErrNotExist) {
		return nil, false, fmt.Errorf("rbd: opening %s: %w", u, err)
	}
	opts := librbd.NewRbdImageOptions()
	defer opts.Destroy()
	if err := librbd.CreateImage(ioctx, u.Image, uint64(size), opts); err != nil {
		return nil, false, fmt.Errorf("rbd: creating %s (%d bytes): %w", u, size, err)
	}
	img, err = librbd.OpenImage(ioctx, u.Image, librbd.NoSnapshot)
	if err != nil {
		return nil, false, fmt.Errorf("rbd: opening the new image %s: %w", u, err)
	}
	return img, true, nil
}

var _ io.WriterAt = (*librbd.Image)(nil)
