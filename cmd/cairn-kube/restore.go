package main

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"sync"
	"text/tabwriter"

	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/cairn-backup/cairn/blockdiff"
	"github.com/cairn-backup/cairn/internal/cli"
	"github.com/cairn-backup/cairn/internal/kubeblock"
	"github.com/cairn-backup/cairn/kube"
)

// restoreJSON is restore's --json result.
type restoreJSON struct {
	Version         string         `json:"version"`
	Namespace       string         `json:"namespace"`        // as backed up
	TargetNamespace string         `json:"target_namespace"` // after --namespace-mapping
	Objects         []kube.Outcome `json:"objects"`
	Created         int            `json:"created"`
	Updated         int            `json:"updated"`
	Skipped         int            `json:"skipped"`
	Failed          int            `json:"failed"`
}

func (a *app) restoreCmd() *cobra.Command {
	var mapping []string
	var include, exclude []string
	var existing string
	var ceph kubeblock.CephFlags
	cmd := &cobra.Command{
		Use:   "restore VERSION [--namespace-mapping old:new]... [--include-kinds K,...] [--exclude-kinds K,...] [--existing skip|update]",
		Short: "Create a namespace's objects from a backup, in dependency order, PVCs bound to their data (Velero's restore)",
		Long: "restore creates the objects of an objects version (k8s/NAMESPACE) in dependency order:\n" +
			"Namespaces, CRDs, classes, ServiceAccounts, Secrets, ConfigMaps, RBAC, PVs/PVCs, Services, then\n" +
			"workloads and custom resources. Objects owned by another object (a Deployment's ReplicaSets,\n" +
			"their Pods) are skipped: their owner makes them; so are Endpoints, EndpointSlices and the\n" +
			"snapshot objects, kept as records. Each object is reported created, updated, skipped (it exists;\n" +
			"--existing update applies the backed-up fields over it) or failed; a failure never stops the\n" +
			"others, and makes the run partial (exit 3).\n\n" +
			"A PVC that does not exist comes back bound to its data: for a backup with --volumes data, a new\n" +
			"RBD image restored from the recorded block version (cairn-restore-NAMESPACE-PVC-VERSION in the\n" +
			"original pool) behind a new static PV; for --volumes snapshot, with the recorded VolumeSnapshot\n" +
			"as its dataSource (pre-provisioned from the recorded snapshot handle when it is gone); otherwise\n" +
			"bound to its recorded PV. Restoring data needs the build tags \"ceph pacific\".",
		Args: cli.Args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, as []string) error {
			opts := kube.RestoreOptions{Kinds: kube.KindFilter{Include: include, Exclude: exclude}, Existing: kube.Existing(existing),
				NamespaceMapping: map[string]string{}, Logger: a.Log}
			if opts.Existing != kube.ExistingSkip && opts.Existing != kube.ExistingUpdate {
				return cli.Usagef("--existing %q: want skip or update", existing)
			}
			for _, m := range mapping {
				old, nw, ok := strings.Cut(m, ":")
				if !ok || old == "" || nw == "" || strings.Contains(nw, ":") {
					return cli.Usagef("--namespace-mapping %q: want OLD:NEW", m)
				}
				opts.NamespaceMapping[old] = nw
			}
			return a.restore(cmd.Context(), as[0], &ceph, opts)
		},
	}
	f := cmd.Flags()
	f.StringArrayVar(&mapping, "namespace-mapping", nil, "restore namespace OLD as NEW (OLD:NEW, repeatable)")
	f.StringSliceVar(&include, "include-kinds", nil, "restore only these kinds or resources (comma-separated, repeatable)")
	f.StringSliceVar(&exclude, "exclude-kinds", nil, "do not restore these kinds or resources")
	f.StringVar(&existing, "existing", string(kube.ExistingSkip), "an object that exists: skip it, or update it with the backed-up fields")
	ceph.Register(cmd)
	return cmd
}

// restore is the restore command.
func (a *app) restore(ctx context.Context, id string, ceph *kubeblock.CephFlags, opts kube.RestoreOptions) error {
	kc, err := a.kube()
	if err != nil {
		return err
	}
	var out restoreJSON
	err = a.WithRepo(ctx, func(r *blockdiff.Repository) error {
		v, err := r.Version(ctx, id)
		if err != nil {
			return err
		}
		if v.Kind != blockdiff.KindStream || !strings.HasPrefix(v.Volume, "k8s/") {
			return cli.Usagef("version %s is %s of %s, not the objects of a namespace (a k8s/NAMESPACE version)", id, v.Kind, v.Volume)
		}
		var buf bytes.Buffer
		if err := r.RestoreStream(ctx, id, &buf, blockdiff.StreamRestoreOptions{}); err != nil {
			return err
		}
		all, err := kube.ReadArchive(&buf)
		if err != nil {
			return fmt.Errorf("version %s: %w", id, err)
		}
		objs, recs, err := splitRecords(all)
		if err != nil {
			return fmt.Errorf("version %s: %w", id, err)
		}
		ns, err := kube.CheckArchive(objs)
		if err != nil {
			return fmt.Errorf("version %s: %w", id, err)
		}
		out = restoreJSON{Version: id, Namespace: ns, TargetNamespace: ns}
		if n, ok := opts.NamespaceMapping[ns]; ok {
			out.TargetNamespace = n
		}
		vd := &volumeData{a: a, r: r, ceph: ceph, recs: recs}
		defer vd.close()
		opts.Volume = vd.source
		a.Log.Info("restore", "version", id, "namespace", ns, "target_namespace", out.TargetNamespace, "objects", len(objs), "volumes", len(recs))
		out.Objects, err = kc.Restore(ctx, objs, opts)
		return err
	})
	if err != nil {
		return err
	}
	for _, o := range out.Objects {
		switch o.Action {
		case kube.ActionCreated:
			out.Created++
		case kube.ActionUpdated:
			out.Updated++
		case kube.ActionSkipped:
			out.Skipped++
		case kube.ActionFailed:
			out.Failed++
		}
	}
	if a.JSON {
		if err := a.WriteJSON(out); err != nil {
			return err
		}
	} else {
		tw := tabwriter.NewWriter(a.IO.Out, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "KIND\tNAMESPACE\tNAME\tOUTCOME\tWHY")
		for _, o := range out.Objects {
			why := o.Reason
			if o.Error != "" {
				why = o.Error
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", o.Kind, o.Namespace, o.Name, o.Action, why)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	if out.Failed == 0 {
		return nil
	}
	var names []string
	for _, o := range out.Objects {
		if o.Action == kube.ActionFailed {
			names = append(names, fmt.Sprintf("%s %s: %s", o.Kind, strings.TrimPrefix(o.Namespace+"/"+o.Name, "/"), o.Error))
		}
	}
	err = fmt.Errorf("restore of %s: %d of %d objects failed: %s", id, out.Failed, len(out.Objects), strings.Join(names, "; "))
	if out.Created+out.Updated > 0 {
		return cli.WithExitCode(cli.ExitPartial, err)
	}
	return err
}

// volumeData answers kube.RestoreOptions.Volume from a backup's records.
type volumeData struct {
	a    *app
	r    *blockdiff.Repository
	ceph *kubeblock.CephFlags
	recs map[string]volumeRecord

	mu   sync.Mutex
	conn closer // the Ceph connection, on first need (ceph.go)
}

type closer interface{ Close() }

func (vd *volumeData) close() {
	if vd.conn != nil {
		vd.conn.Close()
	}
}

// source is where the PVC pvc (as backed up) gets its data in namespace.
func (vd *volumeData) source(ctx context.Context, pvc *unstructured.Unstructured, namespace string) (*kube.VolumeSource, error) {
	rec, ok := vd.recs[pvc.GetName()]
	if !ok || !rec.OK() {
		return nil, nil // no data recorded: as recorded
	}
	switch {
	case rec.Mode == volumesSnapshot && rec.Snapshot != nil:
		return &kube.VolumeSource{Snapshot: rec.Snapshot}, nil
	case rec.Mode == volumesData && rec.Image != nil && rec.Version != "":
		img := *rec.Image
		img.Image = restoredImageName(namespace, rec.PVC, rec.Version)
		vd.mu.Lock()
		defer vd.mu.Unlock()
		if err := vd.restoreImage(ctx, rec, &img); err != nil {
			return nil, fmt.Errorf("restoring the data of PVC %s/%s (version %s) into %s/%s: %w", namespace, rec.PVC, rec.Version, img.Pool, img.Image, err)
		}
		return &kube.VolumeSource{RBD: img.kube()}, nil
	}
	return nil, nil
}

// restoredImageName is the RBD image a restore writes a PVC's version into.
func restoredImageName(namespace, pvc, version string) string {
	return "cairn-restore-" + namespace + "-" + pvc + "-" + version
}
