package main

import (
	"context"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/client-go/rest"

	"github.com/cairn-backup/cairn/blockdiff"
	"github.com/cairn-backup/cairn/internal/cli"
	"github.com/cairn-backup/cairn/internal/repocli"
	"github.com/cairn-backup/cairn/kube"
)

// app holds the global flags and what the commands share: the repository
// layer of every cairn binary (internal/repocli) and the cluster.
type app struct {
	repocli.Repo
	kubeconfig string

	kc *kube.Client // from kubeconfig, on first use
}

// run executes one command line and returns the exit code.
func run(ctx context.Context, args []string, sio cli.IO) int {
	a := &app{}
	a.IO = sio
	return a.Execute(ctx, a.rootCmd(), args)
}

// rootCmd builds the command tree.
func (a *app) rootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "cairn-kube",
		Short: "A namespace's Kubernetes objects, CSI snapshots and PVC data in a repository, and back (Velero's part)",
		Long: "cairn-kube backs up a namespace's objects (and the cluster-scoped objects it depends on) as the\n" +
			"stream version k8s/NAMESPACE, with its PVCs' data as block versions (--volumes data) or CSI\n" +
			"VolumeSnapshots (--volumes snapshot), and restores them in dependency order. --repo defaults to\n" +
			"$CAIRN_REPO; the passphrase comes from $CAIRN_PASSWORD or --password-file; the cluster from the\n" +
			"Pod's service account, else --kubeconfig or $KUBECONFIG.",
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error { return a.Setup() },
	}
	a.AddFlags(root)
	root.PersistentFlags().StringVar(&a.kubeconfig, "kubeconfig", "",
		"kubeconfig file (default: the Pod's service account in a cluster, else $KUBECONFIG or ~/.kube/config)")
	a.AddCommands(root, repocli.Mount{PrintVersions: printBackups, Enforce: a.enforce,
		LabelFlags: []repocli.LabelFlag{{Name: "namespace", Label: kube.LabelNamespace, Usage: "only versions of this Kubernetes namespace"}}})
	root.AddCommand(a.backupCmd(), a.restoreCmd(), a.VersionCmd())
	return root
}

// kube returns the cluster's client.
func (a *app) kube() (*kube.Client, error) {
	if a.kc != nil {
		return a.kc, nil
	}
	cfg, err := kube.Config(a.kubeconfig)
	if err != nil {
		return nil, err
	}
	cfg.QPS, cfg.Burst = 50, 100           // a namespace's resources, one list each
	cfg.WarningHandler = rest.NoWarnings{} // deprecated kinds (v1 Endpoints) are listed on purpose
	if a.kc, err = kube.New(cfg); err != nil {
		return nil, err
	}
	return a.kc, nil
}

// printBackups is ls's table: versions with their namespace, object count
// and volumes mode.
func printBackups(w io.Writer, vs []*blockdiff.Version) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tVOLUME\tKIND\tCREATED\tSIZE\tNEW\tSTATUS\tNAMESPACE\tOBJECTS\tVOLUMES")
	for _, v := range vs {
		objs, mode := v.Labels[labelObjects], v.Labels[labelVolumes]
		if v.Kind == blockdiff.KindBlock {
			objs, mode = "-", "data of PVC "+v.Labels[kube.LabelPVC]
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", v.ID, v.Volume, v.Kind, v.Created.Local().Format(time.DateTime),
			cli.HumanBytes(v.Size), cli.HumanBytes(v.Stats.BytesWritten), v.Status, v.Labels[kube.LabelNamespace], objs, mode)
	}
	return tw.Flush()
}
