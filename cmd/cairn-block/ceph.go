//go:build ceph

package main

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/cairn-backup/cairn/blockdiff"
	"github.com/cairn-backup/cairn/blockdiff/rbd"
	"github.com/cairn-backup/cairn/internal/cli"
	"github.com/cairn-backup/cairn/internal/repocli"
	_ "github.com/cairn-backup/cairn/objstore/rados" // registers rados:// for --repo
)

func (c *cephFlags) connect() (*rbd.Conn, error) { return c.Connect() }

// backupRBD is `backup rbd://... VOLUME`.
func (a *app) backupRBD(cmd *cobra.Command, cf *cephFlags, source, volume string) error {
	u, err := rbd.ParseURL(source)
	if err != nil {
		return cli.UsageError{Err: err}
	}
	f := cmd.Flags()
	if base, _ := f.GetString("base"); base != "" {
		return cli.Usagef("--base does not apply to rbd:// sources: the base is found from the image's snapshots")
	}
	if hints, _ := f.GetString("hints"); hints != "" {
		return cli.Usagef("--hints does not apply to rbd:// sources: the changes come from the snapshots' diff")
	}
	opts := rbd.BackupOptions{Volume: volume, Logger: a.Log}
	labels, _ := f.GetStringArray("label")
	if opts.Labels, err = repocli.ParseLabels(labels); err != nil {
		return err
	}
	bsFlag, _ := f.GetString("block-size")
	bs, err := repocli.ParseBlockSize(bsFlag)
	if err != nil {
		return err
	}
	opts.BlockSize = bs
	if opts.VerifyPercent, _ = f.GetFloat64("verify-hints"); opts.VerifyPercent < 0 || opts.VerifyPercent > 100 {
		return cli.Usagef("--verify-hints %v: want a percentage 0..100", opts.VerifyPercent)
	}
	conn, err := cf.connect()
	if err != nil {
		return err
	}
	defer conn.Close()
	return a.WithRepo(cmd.Context(), func(r *blockdiff.Repository) error {
		bar := a.NewProgress("backup " + volume)
		opts.Progress = bar.Bytes
		res, err := conn.Backup(cmd.Context(), r, u, opts)
		bar.Finish()
		if err != nil {
			return err
		}
		v := res.Version
		a.RecordVersion(v)
		a.Log.Info("rbd backup done", "version", v.ID, "snapshot", res.Snapshot, "base", res.Base,
			"full_reason", res.FullReason, "bytes_read", res.BytesRead, "removed_snapshots", res.RemovedSnapshots)
		if a.JSON {
			return a.WriteJSON(repocli.NewVersionJSON(v))
		}
		_, err = fmt.Fprintln(a.IO.Out, v.ID)
		return err
	})
}

// restoreRBD is `restore VERSION rbd://POOL/IMAGE`.
func (a *app) restoreRBD(cmd *cobra.Command, cf *cephFlags, id, dest string) error {
	u, err := rbd.ParseURL(dest)
	if err != nil {
		return cli.UsageError{Err: err}
	}
	if u.Snapshot != "" {
		return cli.Usagef("restore to %s: name an image, not a snapshot", dest)
	}
	force, _ := cmd.Flags().GetBool("force")
	conn, err := cf.connect()
	if err != nil {
		return err
	}
	defer conn.Close()
	return a.WithRepo(cmd.Context(), func(r *blockdiff.Repository) error {
		bar := a.NewProgress("restore " + id)
		err := conn.Restore(cmd.Context(), r, id, u, rbd.RestoreOptions{Force: force, Progress: bar.Bytes})
		bar.Finish()
		if err == nil {
			a.Log.Info("restored", "version", id, "dest", u.String())
		}
		return err
	})
}

// backupAll backs up every matching image of the pool.
func (a *app) backupAll(cmd *cobra.Command, o *backupAllOptions) error {
	ctx := cmd.Context()
	conn, err := o.ceph.connect()
	if err != nil {
		return err
	}
	defer conn.Close()
	names, err := conn.ListImages(o.pool, o.ns)
	if err != nil {
		return err
	}
	slices.Sort(names)
	var todo []string
	for _, n := range names {
		if o.imageRegex.MatchString(n) {
			todo = append(todo, n)
		}
	}
	a.Log.Info("backup-all", "pool", o.pool, "images", len(names), "matching", len(todo))
	sum := backupAllJSON{Pool: o.pool, Namespace: o.ns, Images: make([]imageResultJSON, len(todo))}
	err = a.WithRepo(ctx, func(r *blockdiff.Repository) error {
		sem := make(chan struct{}, o.parallel)
		var wg sync.WaitGroup
		for i, name := range todo {
			sem <- struct{}{}
			wg.Go(func() {
				defer func() { <-sem }()
				sum.Images[i] = a.backupOne(ctx, conn, r, o, name)
			})
		}
		wg.Wait()
		return nil
	})
	if err != nil {
		return err
	}
	return a.summarize(sum)
}

// backupOne backs up one image for backup-all and reports the outcome.
func (a *app) backupOne(ctx context.Context, conn *rbd.Conn, r *blockdiff.Repository, o *backupAllOptions, name string) imageResultJSON {
	u := rbd.URL{Pool: o.pool, Namespace: o.ns, Image: name}
	res := imageResultJSON{Image: u.Spec(), Volume: o.volumePrefix + name}
	start := time.Now()
	out, err := conn.Backup(ctx, r, u, rbd.BackupOptions{Volume: res.Volume, Labels: o.labels,
		BlockSize: o.blockSize, SnapshotPrefix: o.snapshotPrefix, Logger: a.Log.With("image", u.Spec())})
	res.Seconds = time.Since(start).Seconds()
	if err != nil {
		res.Error = err.Error()
		a.RecordFailedBackup(res.Volume)
		a.Log.Error("image backup failed", "image", u.Spec(), "err", err)
		return res
	}
	v := out.Version
	a.RecordVersion(v)
	res.OK, res.Version, res.Snapshot, res.Base, res.FullReason = true, v.ID, out.Snapshot, out.Base, out.FullReason
	res.Size, res.BytesRead, res.BytesWritten, res.Removed = v.Size, out.BytesRead, v.Stats.BytesWritten, out.RemovedSnapshots
	a.Log.Info("image backed up", "image", u.Spec(), "version", v.ID, "base", out.Base, "bytes_read", out.BytesRead)
	return res
}

// imageResultJSON is one image of backup-all's summary.
type imageResultJSON struct {
	Image        string   `json:"image"`
	Volume       string   `json:"volume"`
	OK           bool     `json:"ok"`
	Error        string   `json:"error,omitempty"`
	Version      string   `json:"version,omitempty"`
	Snapshot     string   `json:"snapshot,omitempty"`
	Base         string   `json:"base,omitempty"`
	FullReason   string   `json:"full_reason,omitempty"`
	Size         int64    `json:"size"`
	BytesRead    int64    `json:"bytes_read"`
	BytesWritten int64    `json:"bytes_written"`
	Removed      []string `json:"removed_snapshots,omitempty"`
	Seconds      float64  `json:"seconds"`
}

// backupAllJSON is backup-all's --json summary.
type backupAllJSON struct {
	Pool      string            `json:"pool"`
	Namespace string            `json:"namespace,omitempty"`
	Images    []imageResultJSON `json:"images"`
	Succeeded int               `json:"succeeded"`
	Failed    int               `json:"failed"`
}

// summarize prints the result of backup-all and returns its error.
func (a *app) summarize(sum backupAllJSON) error {
	for _, r := range sum.Images {
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
		for _, r := range sum.Images {
			if r.OK {
				fmt.Fprintf(a.IO.Out, "ok\t%s\t%s\tread %s\n", r.Image, r.Version, cli.HumanBytes(r.BytesRead))
			} else {
				fmt.Fprintf(a.IO.Out, "FAILED\t%s\t%s\n", r.Image, r.Error)
			}
		}
	}
	return cli.Outcome("backup-all", "images", sum.Succeeded, sum.Failed)
}
