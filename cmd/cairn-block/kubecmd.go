package main

import (
	"github.com/spf13/cobra"

	"github.com/cairn-backup/cairn/internal/cli"
	"github.com/cairn-backup/cairn/kube"
)

// kubeFlags select PVCs for backup-all: --selector, --namespace (repeatable)
// or --all-namespaces, --kubeconfig.
type kubeFlags struct {
	selector      string
	namespaces    []string
	allNamespaces bool
	kubeconfig    string
}

// register adds the flags to backup-all; --namespace is registered by the
// caller (rbdcmd.go) next to --rbd-namespace.
func (k *kubeFlags) register(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVar(&k.selector, "selector", "",
		"back up the RBD volumes of the PVCs this Kubernetes label selector chooses (backup-this-pvc=true, 'app in (a,b)', '!x'), with --namespace or --all-namespaces")
	f.BoolVar(&k.allNamespaces, "all-namespaces", false, "with --selector: PVCs of every namespace")
	addKubeconfigFlag(cmd, &k.kubeconfig)
}

func addKubeconfigFlag(cmd *cobra.Command, p *string) {
	cmd.Flags().StringVar(p, "kubeconfig", "",
		"kubeconfig file (default: the Pod's service account in a cluster, else $KUBECONFIG or ~/.kube/config)")
}

// used reports whether any Kubernetes selection flag was given.
func (k *kubeFlags) used() bool {
	return k.selector != "" || len(k.namespaces) > 0 || k.allNamespaces
}

// check validates the selection and returns it.
func (k *kubeFlags) check() (kube.Selector, error) {
	switch {
	case k.selector == "":
		return kube.Selector{}, cli.Usagef("--namespace and --all-namespaces select PVCs and need --selector (e.g. --selector backup-this-pvc=true); the RBD namespace of --pool is --rbd-namespace")
	case k.allNamespaces && len(k.namespaces) > 0:
		return kube.Selector{}, cli.Usagef("--namespace and --all-namespaces exclude each other")
	case !k.allNamespaces && len(k.namespaces) == 0:
		return kube.Selector{}, cli.Usagef("--selector %q: name the namespaces (--namespace N, repeatable) or --all-namespaces", k.selector)
	}
	if _, err := kube.ParseLabelSelector(k.selector); err != nil {
		return kube.Selector{}, cli.UsageError{Err: err}
	}
	for _, ns := range k.namespaces {
		if ns == "" {
			return kube.Selector{}, cli.Usagef("--namespace: empty name")
		}
	}
	return kube.Selector{Namespaces: k.namespaces, AllNamespaces: k.allNamespaces, Labels: k.selector}, nil
}

// restorePVCOptions are the flags of restore-pvc.
type restorePVCOptions struct {
	ceph       cephFlags
	kubeconfig string
	namespace  string
	pvc        string
	force      bool
}

// restorePVCCmd is Benji's benji-restore-pvc: restore a version into the
// RBD image behind a PVC.
func (a *app) restorePVCCmd() *cobra.Command {
	var o restorePVCOptions
	cmd := &cobra.Command{
		Use:   "restore-pvc VERSION --namespace N --pvc NAME [--force]",
		Short: "Restore a version into the RBD image of a PVC (Benji's benji-restore-pvc)",
		Long: "restore-pvc resolves the PVC through its bound PV to its RBD image (ceph-csi or in-tree rbd)\n" +
			"and writes VERSION into that image, every block verified. The image is neither created nor\n" +
			"resized: a target smaller than the version is refused, a larger one keeps its bytes past the\n" +
			"version's end. While a VolumeAttachment names the PV (a node has it, or is attaching it) the\n" +
			"restore is refused: scale the workload down first, or --force to write under it anyway.\n" +
			"It needs get on the PVC and PV and list on VolumeAttachments (deploy/rbac.yaml).",
		Args: cli.Args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, as []string) error {
			if o.namespace == "" || o.pvc == "" {
				return cli.Usagef("restore-pvc needs --namespace and --pvc")
			}
			return a.restorePVC(cmd, &o, as[0])
		},
	}
	f := cmd.Flags()
	o.ceph.register(cmd)
	addKubeconfigFlag(cmd, &o.kubeconfig)
	f.StringVar(&o.namespace, "namespace", "", "the PVC's namespace")
	f.StringVar(&o.pvc, "pvc", "", "the PVC's name")
	f.BoolVar(&o.force, "force", false, "restore even while a VolumeAttachment names the PV (data in use is overwritten)")
	return cmd
}
