package main

import (
	"regexp"
	"strings"

	"github.com/spf13/cobra"

	"github.com/cairn-backup/cairn/internal/cli"
	"github.com/cairn-backup/cairn/internal/kubeblock"
	"github.com/cairn-backup/cairn/internal/repocli"
)

// cephFlags are the connection flags of the commands that talk to Ceph
// (--ceph-conf, --ceph-id, --ceph-keyring, --ceph-timeout), the same as
// cairn-kube's; the standard environment (CEPH_CONF, CEPH_ARGS) applies when
// they are unset.
type cephFlags struct{ kubeblock.CephFlags }

func (c *cephFlags) register(cmd *cobra.Command) { c.Register(cmd) }

// addCephCommands teaches backup and restore rbd:// URLs and adds
// backup-all. In a build without the ceph tag they explain how to rebuild.
func (a *app) addCephCommands(root *cobra.Command) {
	for _, c := range root.Commands() {
		orig := c.RunE
		switch c.Name() {
		case "backup":
			cf := &cephFlags{}
			cf.register(c)
			c.Short += "; or an RBD image (rbd://POOL/IMAGE[@SNAPSHOT])"
			c.Long = "SOURCE is a file, a block device, or an RBD image. For rbd://POOL/IMAGE the backup creates\n" +
				"the snapshot b-<UTC timestamp>, backs up the changes since the newest valid version of VOLUME\n" +
				"whose snapshot still exists (a full read when there is none) and then removes the image's\n" +
				"older b- snapshots. rbd://POOL/IMAGE@SNAPSHOT backs up that snapshot and removes none."
			c.RunE = func(cmd *cobra.Command, as []string) error {
				if len(as) == 2 && strings.HasPrefix(as[0], "rbd://") {
					return a.backupRBD(cmd, cf, as[0], as[1])
				}
				return orig(cmd, as)
			}
		case "restore":
			cf := &cephFlags{}
			cf.register(c)
			c.Short += "; or to an RBD image (rbd://POOL/IMAGE, created when absent)"
			c.RunE = func(cmd *cobra.Command, as []string) error {
				if len(as) == 2 && strings.HasPrefix(as[1], "rbd://") {
					return a.restoreRBD(cmd, cf, as[0], as[1])
				}
				return orig(cmd, as)
			}
		}
	}
	root.AddCommand(a.backupAllCmd(), a.restorePVCCmd()) // restore-pvc: kubecmd.go
}

// backupAllOptions are the flags of backup-all.
type backupAllOptions struct {
	ceph           cephFlags
	pool, ns       string
	imageRegex     *regexp.Regexp
	volumePrefix   string
	kube           kubeFlags // --selector: PVCs instead of --pool (kubecmd.go)
	snapshotPrefix string
	labels         map[string]string
	blockSize      int
	parallel       int
}

func (a *app) backupAllCmd() *cobra.Command {
	var o backupAllOptions
	var re, blockSize string
	var labels []string
	cmd := &cobra.Command{
		Use:   "backup-all {--pool POOL [--image-regex R] | --selector SEL {--namespace N... | --all-namespaces}} [--snapshot-prefix P] [--json]",
		Short: "Back up every RBD image of a pool, or of the PVCs a label selector chooses (Benji's backup-all)",
		Long: "backup-all backs up each image of POOL whose name matches --image-regex (unanchored: use\n" +
			"^...$) as `backup rbd://POOL/IMAGE PREFIX+IMAGE` does: snapshot, diff from the last valid\n" +
			"version, rotation of the b- snapshots. One image's failure does not stop the others; the\n" +
			"exit code is 0 when every image succeeded, 3 (partial) when some did, 1 when none did.\n--json prints a summary.\n\n" +
			"With --selector instead of --pool it backs up the PVCs that the Kubernetes label selector\n" +
			"chooses in the --namespace(s) or --all-namespaces: each PVC's bound PV names its RBD image\n" +
			"(ceph-csi rbd.csi.ceph.com or in-tree rbd), backed up as the volume NAMESPACE/PVC with the\n" +
			"labels k8s-namespace, k8s-pvc, k8s-pvc-uid, k8s-pv, k8s-storage-class, k8s-driver and\n" +
			"k8s-rbd-image. A PVC that is unbound, of another driver or whose backup fails is reported\n" +
			"and the others go on. It needs get/list on PVCs and get on PVs (deploy/rbac.yaml).\n\n" +
			"--snapshot-prefix: two jobs that back up the same images into two repositories need\n" +
			"prefixes of their own, or each rotation removes the other's base snapshot.",
		Args: cli.Args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkSnapshotPrefix(o.snapshotPrefix); err != nil {
				return err
			}
			kubeMode := o.kube.used()
			switch {
			case kubeMode && (o.pool != "" || o.ns != "" || re != "" || o.volumePrefix != ""):
				return cli.Usagef("--selector chooses PVCs, whose PVs name pool and image: drop --pool, --rbd-namespace, --image-regex and --volume-prefix")
			case !kubeMode && o.pool == "":
				return cli.Usagef("backup-all needs --pool, or --selector to back up PVCs")
			}
			var err error
			if o.imageRegex, err = regexp.Compile(re); err != nil {
				return cli.Usagef("--image-regex: %v", err)
			}
			if o.labels, err = repocli.ParseLabels(labels); err != nil {
				return err
			}
			bs, err := repocli.ParseBlockSize(blockSize)
			if err != nil {
				return err
			}
			o.blockSize = bs
			if o.parallel < 1 {
				return cli.Usagef("--parallel %d: want at least 1", o.parallel)
			}
			if kubeMode {
				sel, err := o.kube.check()
				if err != nil {
					return err
				}
				return a.backupAllKube(cmd, &o, sel)
			}
			return a.backupAll(cmd, &o)
		},
	}
	f := cmd.Flags()
	o.ceph.register(cmd)
	f.StringVar(&o.pool, "pool", "", "the RBD pool")
	f.StringVar(&o.ns, "rbd-namespace", "", "the RBD namespace in the pool (default: none)")
	o.kube.register(cmd)
	f.StringArrayVar(&o.kube.namespaces, "namespace", nil, "with --selector: the PVCs' Kubernetes namespace (repeatable)")
	f.StringVar(&o.snapshotPrefix, "snapshot-prefix", "b-",
		"prefix of the snapshots backup-all creates and rotates: give each repository's job its own (rotation removes only PREFIX<timestamp> snapshots)")
	f.StringVar(&re, "image-regex", "", "back up only images whose name matches (default: all)")
	f.StringVar(&o.volumePrefix, "volume-prefix", "", "volume name = PREFIX + image name")
	f.StringArrayVar(&labels, "label", nil, "label k=v on every version (repeatable)")
	f.StringVar(&blockSize, "block-size", "0", "block size of the versions (default: the repository's)")
	f.IntVar(&o.parallel, "parallel", 1, "images backed up at once")
	return cmd
}
