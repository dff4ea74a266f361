package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/cairn-backup/cairn/blockdiff"
	"github.com/cairn-backup/cairn/internal/cli"
	"github.com/cairn-backup/cairn/internal/kubeblock"
	"github.com/cairn-backup/cairn/internal/repocli"
	"github.com/cairn-backup/cairn/kube"
)

// backupOptions are the flags of backup.
type backupOptions struct {
	namespace       string
	selector        string
	volumes         string
	snapshotClass   string
	snapshotTimeout time.Duration
	include         []string
	exclude         []string
	allowSecrets    bool
	labels          map[string]string
	ceph            kubeblock.CephFlags
	snapshotPrefix  string
	blockSize       int
	parallel        int
}

// backupJSON is backup's --json summary.
type backupJSON struct {
	Namespace string               `json:"namespace"`
	Selector  string               `json:"selector,omitempty"`
	Version   *repocli.VersionJSON `json:"version"` // the objects version
	Objects   int                  `json:"objects"`
	Secrets   string               `json:"secrets"` // included or omitted
	Mode      string               `json:"volumes_mode"`
	Volumes   []volumeRecord       `json:"volumes"`
	Errors    []string             `json:"errors,omitempty"`   // resources that could not be read
	Warnings  []string             `json:"warnings,omitempty"` // missing dependencies, left-out Secrets
	Succeeded int                  `json:"succeeded"`          // volumes
	Failed    int                  `json:"failed"`             // volumes
}

func (a *app) backupCmd() *cobra.Command {
	var o backupOptions
	var labels []string
	var blockSize string
	cmd := &cobra.Command{
		Use:   "backup --namespace N [--selector SEL] [--volumes none|data|snapshot] [--snapshot-class C] [--include-kinds K,...] [--exclude-kinds K,...]",
		Short: "Back up a namespace's objects, and its PVCs' data or snapshots (Velero's backup)",
		Long: "backup stores every object of the namespace that the API server lists (discovery plus the\n" +
			"dynamic client: custom resources too; events are left out, as Velero does), cleaned of status,\n" +
			"managedFields, resourceVersion, uid, creationTimestamp and generation, plus the cluster-scoped\n" +
			"objects it depends on (the PVs bound to its PVCs, their StorageClasses, the VolumeSnapshotClasses\n" +
			"and contents of its VolumeSnapshots, the CRDs of its custom resources), as the stream version\n" +
			"k8s/NAMESPACE: a tar of one YAML document per object at GROUP/VERSION/KIND/NAME.yaml, sorted.\n" +
			"--include-kinds/--exclude-kinds take kinds or resources (Deployment, deployments.apps, pvc).\n\n" +
			"--volumes chooses what happens to the data of the PVCs --selector chooses (default: all of the\n" +
			"namespace's): none; data, their RBD images backed up as block versions N/PVC exactly as\n" +
			"cairn-block backup-all --selector does (snapshots --snapshot-prefix<timestamp>, differential);\n" +
			"snapshot, a CSI VolumeSnapshot of each with --snapshot-class, waited for until readyToUse\n" +
			"(--snapshot-timeout) and kept (its content's deletionPolicy becomes Retain). The objects version\n" +
			"records the block versions or snapshots, and restore rebinds each PVC to its data.\n\n" +
			"Secrets go only into an encrypted repository, unless --allow-unencrypted-secrets. A PVC whose\n" +
			"data failed, or a resource that could not be listed, makes the run partial (exit 3) after\n" +
			"the objects version is stored.",
		Args: cli.Args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if o.namespace == "" {
				return cli.Usagef("backup needs --namespace")
			}
			switch o.volumes {
			case volumesNone, volumesData, volumesSnapshot:
			default:
				return cli.Usagef("--volumes %q: want none, data or snapshot", o.volumes)
			}
			if o.volumes == volumesData && !cephBuilt {
				return errNoCeph
			}
			if o.snapshotClass != "" && o.volumes != volumesSnapshot {
				return cli.Usagef("--snapshot-class needs --volumes snapshot")
			}
			if o.snapshotTimeout <= 0 {
				return cli.Usagef("--snapshot-timeout %s: want a duration > 0", o.snapshotTimeout)
			}
			if _, err := kube.ParseLabelSelector(o.selector); err != nil {
				return cli.UsageError{Err: err}
			}
			if err := checkSnapshotPrefix(o.snapshotPrefix); err != nil {
				return err
			}
			var err error
			if o.labels, err = repocli.ParseLabels(labels); err != nil {
				return err
			}
			if o.blockSize, err = repocli.ParseBlockSize(blockSize); err != nil {
				return err
			}
			if o.parallel < 1 {
				return cli.Usagef("--parallel %d: want at least 1", o.parallel)
			}
			return a.backup(cmd.Context(), &o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.namespace, "namespace", "", "the namespace to back up")
	f.StringVar(&o.selector, "selector", "", "label selector of the PVCs whose data --volumes backs up (default: every PVC of the namespace)")
	f.StringVar(&o.volumes, "volumes", volumesNone, "the PVCs' data: none, data (block versions of their RBD images) or snapshot (CSI VolumeSnapshots)")
	f.StringVar(&o.snapshotClass, "snapshot-class", "", "with --volumes snapshot: the VolumeSnapshotClass (default: the driver's default class)")
	f.DurationVar(&o.snapshotTimeout, "snapshot-timeout", 10*time.Minute, "with --volumes snapshot: how long to wait for each snapshot to be readyToUse")
	f.StringSliceVar(&o.include, "include-kinds", nil, "back up only these kinds or resources (comma-separated, repeatable; Velero's --include-resources)")
	f.StringSliceVar(&o.exclude, "exclude-kinds", nil, "leave out these kinds or resources (Velero's --exclude-resources)")
	f.BoolVar(&o.allowSecrets, "allow-unencrypted-secrets", false, "back up Secrets into a repository that is not encrypted")
	f.StringArrayVar(&labels, "label", nil, "label k=v on every version of the run (repeatable)")
	o.ceph.Register(cmd)
	f.StringVar(&o.snapshotPrefix, "snapshot-prefix", "b-",
		"with --volumes data: prefix of the RBD snapshots created and rotated (give each repository's job its own)")
	f.StringVar(&blockSize, "block-size", "0", "with --volumes data: block size of the versions (default: the repository's)")
	f.IntVar(&o.parallel, "parallel", 1, "with --volumes data: volumes backed up at once")
	return cmd
}

// backup is the backup command.
func (a *app) backup(ctx context.Context, o *backupOptions) error {
	kc, err := a.kube()
	if err != nil {
		return err
	}
	sum := backupJSON{Namespace: o.namespace, Selector: o.selector, Mode: o.volumes, Volumes: []volumeRecord{}}
	err = a.WithRepo(ctx, func(r *blockdiff.Repository) error {
		skipSecrets := !r.Encrypted() && !o.allowSecrets
		sum.Secrets = "included"
		if skipSecrets {
			sum.Secrets = "omitted"
			a.Log.Warn("Secrets left out: the repository is not encrypted (--allow-unencrypted-secrets to store them anyway)",
				"namespace", o.namespace)
		}
		if o.volumes != volumesNone {
			vols, err := kc.Select(ctx, kube.Selector{Namespaces: []string{o.namespace}, Labels: o.selector})
			if err != nil {
				return err
			}
			if len(vols) == 0 {
				a.Log.Warn("no PVC matches the selector", "namespace", o.namespace, "selector", o.selector)
			}
			switch o.volumes {
			case volumesData:
				if sum.Volumes, err = a.backupData(ctx, r, vols, o); err != nil {
					return err
				}
			case volumesSnapshot:
				sum.Volumes = a.backupSnapshots(ctx, kc, vols, o)
			}
		}
		var classes []string
		if o.snapshotClass != "" {
			classes = []string{o.snapshotClass}
		}
		ex, err := kc.Export(ctx, kube.ExportOptions{Namespace: o.namespace, SkipSecrets: skipSecrets, SnapshotClasses: classes,
			Kinds: kube.KindFilter{Include: o.include, Exclude: o.exclude}})
		if err != nil {
			return err
		}
		for _, e := range ex.Errors {
			sum.Errors = append(sum.Errors, e.Error())
			a.Log.Error("objects not backed up", "err", e)
		}
		for _, w := range ex.Warnings {
			sum.Warnings = append(sum.Warnings, w)
			a.Log.Warn(w)
		}
		objs := ex.Objects
		for _, rec := range sum.Volumes {
			u, err := rec.object()
			if err != nil {
				return err
			}
			objs = append(objs, u)
		}
		sum.Objects = len(ex.Objects)
		labels := map[string]string{}
		maps.Copy(labels, o.labels)
		maps.Copy(labels, map[string]string{kube.LabelNamespace: o.namespace, labelServerVersion: ex.ServerVersion,
			labelObjects: strconv.Itoa(len(ex.Objects)), labelVolumes: o.volumes, labelSecrets: sum.Secrets})
		if o.selector != "" {
			labels[labelSelector] = o.selector
		}
		v, err := storeArchive(ctx, r, "k8s/"+o.namespace, labels, objs)
		if v != nil {
			a.RecordVersion(v)
		}
		if err != nil {
			return fmt.Errorf("storing the objects of namespace %s: %w", o.namespace, err)
		}
		vj := repocli.NewVersionJSON(v)
		sum.Version = &vj
		a.Log.Info("objects backed up", "namespace", o.namespace, "version", v.ID, "objects", len(ex.Objects),
			"bytes", v.Size, "new_bytes", v.Stats.BytesWritten, "volumes", o.volumes)
		return nil
	})
	if err != nil {
		return err
	}
	return a.summarizeBackup(sum)
}

// storeArchive stores objs as a tar archive in a new stream version.
func storeArchive(ctx context.Context, r *blockdiff.Repository, volume string, labels map[string]string, objs []*unstructured.Unstructured) (*blockdiff.Version, error) {
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(kube.WriteArchive(pw, objs)) }()
	v, err := r.BackupStream(ctx, pr, blockdiff.StreamOptions{Volume: volume, Labels: labels})
	pr.CloseWithError(errors.New("backup ended")) // unblocks the writer when the backup failed early
	return v, err
}

// backupSnapshots takes a CSI VolumeSnapshot of each volume, waits for them
// all, and keeps each one past its namespace (deletionPolicy Retain). A
// snapshot that fails is deleted.
func (a *app) backupSnapshots(ctx context.Context, kc *kube.Client, vols []kube.Volume, o *backupOptions) []volumeRecord {
	recs := make([]volumeRecord, len(vols))
	now := time.Now()
	var wg sync.WaitGroup
	for i, v := range vols {
		rec := &recs[i]
		*rec = volumeRecord{Namespace: v.Namespace, PVC: v.PVC, PV: v.PV, Driver: v.Driver, StorageClass: v.StorageClass, Mode: volumesSnapshot}
		if v.Err != nil && !errors.Is(v.Err, kube.ErrUnsupportedDriver) { // any CSI driver may snapshot
			rec.Error = v.Err.Error()
			continue
		}
		wg.Go(func() {
			name := kube.SnapshotName(v.PVC, now)
			l := map[string]string{}
			if flow, ok := o.labels["flow"]; ok {
				l["cairn.io/flow"] = flow
			}
			if err := kc.CreateSnapshot(ctx, v.Namespace, v.PVC, name, o.snapshotClass, l); err != nil {
				rec.Error = err.Error()
				return
			}
			s, err := kc.WaitSnapshot(ctx, v.Namespace, name, o.snapshotTimeout, 0)
			if err == nil {
				err = kc.RetainSnapshot(ctx, s)
			}
			if err != nil {
				rec.Error = err.Error()
				gone := &kube.Snapshot{Namespace: v.Namespace, Name: name, PVC: v.PVC}
				if s != nil {
					gone = s
				}
				if derr := kc.DeleteSnapshot(context.WithoutCancel(ctx), gone); derr != nil {
					a.Log.Warn("could not delete the failed snapshot", "snapshot", gone.String(), "err", derr)
				}
				return
			}
			rec.Snapshot, rec.Size = s, s.RestoreSize
			a.Log.Info("snapshot ready", "pvc", v.Name(), "snapshot", s.String(), "content", s.Content, "handle", s.Handle)
		})
	}
	wg.Wait()
	for _, rec := range recs {
		if rec.Error != "" {
			a.Log.Error("PVC not snapshotted", "pvc", rec.Namespace+"/"+rec.PVC, "err", rec.Error)
		}
	}
	return recs
}

// summarizeBackup prints backup's result and returns its error: partial
// (exit 3) when volumes failed or resources could not be read.
func (a *app) summarizeBackup(sum backupJSON) error {
	for _, r := range sum.Volumes {
		if r.OK() {
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
		fmt.Fprintf(a.IO.Out, "%s\tk8s/%s\t%d objects\tsecrets %s\n", sum.Version.ID, sum.Namespace, sum.Objects, sum.Secrets)
		for _, r := range sum.Volumes {
			switch {
			case !r.OK():
				fmt.Fprintf(a.IO.Out, "FAILED\t%s/%s\t%s\n", r.Namespace, r.PVC, r.Error)
			case r.Snapshot != nil:
				fmt.Fprintf(a.IO.Out, "ok\t%s/%s\tsnapshot %s\t%s\n", r.Namespace, r.PVC, r.Snapshot.Name, r.Snapshot.Content)
			default:
				fmt.Fprintf(a.IO.Out, "ok\t%s/%s\tversion %s\n", r.Namespace, r.PVC, r.Version)
			}
		}
	}
	var problems []string
	if sum.Failed > 0 {
		var names []string
		for _, r := range sum.Volumes {
			if !r.OK() {
				names = append(names, r.Namespace+"/"+r.PVC+": "+r.Error)
			}
		}
		problems = append(problems, fmt.Sprintf("%d of %d PVCs failed (%s)", sum.Failed, len(sum.Volumes), strings.Join(names, "; ")))
	}
	if len(sum.Errors) > 0 {
		problems = append(problems, fmt.Sprintf("%d resources could not be read (%s)", len(sum.Errors), strings.Join(sum.Errors, "; ")))
	}
	if len(problems) == 0 {
		return nil
	}
	return cli.WithExitCode(cli.ExitPartial, fmt.Errorf("backup of namespace %s stored as %s, but %s",
		sum.Namespace, sum.Version.ID, strings.Join(problems, "; ")))
}
