package kube_test

import (
	"context"
	"fmt"
	"log"

	"github.com/cairn-backup/cairn/kube"
)

// Select the PVCs that Velero's garage-meta-ceph schedule backed up (namespace
// garage, label backup-this-pvc=true) and print the RBD image behind each, or
// why it has none. Compile-only: it needs an API server.
func Example() {
	c, err := kube.NewFromConfigPath("") // in-cluster, else $KUBECONFIG
	if err != nil {
		log.Fatal(err)
	}
	vols, err := c.Select(context.Background(), kube.Selector{
		Namespaces: []string{"garage"},
		Labels:     "backup-this-pvc=true",
	})
	if err != nil {
		log.Fatal(err) // a bad selector, or the API server refused the list
	}
	for _, v := range vols {
		switch {
		case v.Err != nil: // unbound, another driver...: this PVC only
			fmt.Println("skip:", v.Err)
		case v.RBD != nil:
			fmt.Printf("%s -> rbd://%s, labels %v\n", v.Name(), v.RBD.Spec(), v.Labels())
		case v.ZFS != nil:
			fmt.Printf("%s -> zfs %s on node %s\n", v.Name(), v.ZFS.Dataset, v.ZFS.Node)
		}
	}
}
