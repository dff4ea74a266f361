// Package kubeblock joins the kube package and the RBD backups of
// blockdiff/rbd: the PVCs a Kubernetes selection resolves to RBD images,
// backed up as block versions (snapshot, diff from the last valid version's
// snapshot, rotation of the job's own prefix). cairn-block's backup-all
// --selector and cairn-kube's backup --volumes data both run it, so the two
// binaries back up a PVC's data the same way. The backups need the build
// tags "ceph pacific"; CephFlags does not.
package kubeblock

import (
	"time"

	"github.com/spf13/cobra"
)

// CephFlags are the Ceph connection flags of a command that reads or writes
// RBD images; the standard environment (CEPH_CONF, CEPH_ARGS) applies when
// they are unset.
type CephFlags struct {
	Conf, ID, Keyring string
	Timeout           time.Duration
}

// Register adds --ceph-conf, --ceph-id, --ceph-keyring and --ceph-timeout to cmd.
func (c *CephFlags) Register(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVar(&c.Conf, "ceph-conf", "", "ceph.conf (default $CEPH_CONF, else /etc/ceph/ceph.conf)")
	f.StringVar(&c.ID, "ceph-id", "", "Ceph client ID, without \"client.\" (default from $CEPH_ARGS, else admin)")
	f.StringVar(&c.Keyring, "ceph-keyring", "", "keyring file (default: the one ceph.conf names)")
	f.DurationVar(&c.Timeout, "ceph-timeout", 60*time.Second, "timeout to connect to the Ceph cluster and of each operation")
}
