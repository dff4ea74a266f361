package kube_test

import (
	"bytes"
	"context"
	"fmt"
	"log"

	"github.com/cairn-backup/cairn/kube"
)

// Export the objects of namespace garage (Velero's backup of its resources)
// into a tar archive, then restore them under the name garage-copy, in
// dependency order, and print what happened to each object. Compile-only:
// it needs an API server.
func ExampleClient_Export() {
	c, err := kube.NewFromConfigPath("") // in-cluster, else $KUBECONFIG
	if err != nil {
		log.Fatal(err)
	}
	ctx := context.Background()
	ex, err := c.Export(ctx, kube.ExportOptions{Namespace: "garage",
		Kinds: kube.KindFilter{Exclude: []string{"pods"}}})
	if err != nil {
		log.Fatal(err) // no such namespace, discovery failed
	}
	for _, e := range ex.Errors { // resources that could not be listed
		log.Println("partial:", e)
	}
	var archive bytes.Buffer // cairn-kube streams it into a repository
	if err := kube.WriteArchive(&archive, ex.Objects); err != nil {
		log.Fatal(err)
	}
	objs, err := kube.ReadArchive(&archive)
	if err != nil {
		log.Fatal(err)
	}
	outs, err := c.Restore(ctx, objs, kube.RestoreOptions{NamespaceMapping: map[string]string{"garage": "garage-copy"}})
	if err != nil {
		log.Fatal(err)
	}
	for _, o := range outs {
		fmt.Println(o.Action, o.Kind, o.Namespace, o.Name, o.Reason, o.Error)
	}
}
