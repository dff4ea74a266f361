// Command cairn-kube is cairn's replacement for Velero's namespace backups:
// a namespace's Kubernetes objects (every resource the API server lists,
// custom resources included, and the cluster-scoped objects it depends on)
// as a stream version of a blockdiff repository, its PVCs' data as block
// versions or CSI VolumeSnapshots, and the way back.
//
//	cairn-kube backup  --namespace N [--selector SEL] [--volumes none|data|snapshot] [--snapshot-class C]
//	                   [--include-kinds K,...] [--exclude-kinds K,...] [--allow-unencrypted-secrets] [--label k=v]...
//	cairn-kube restore VERSION [--namespace-mapping old:new] [--include-kinds ...] [--exclude-kinds ...] [--existing skip|update]
//	cairn-kube ls      [--namespace N] [--volume V] [--label k=v] [--json]
//	cairn-kube enforce {RULES | --keep-within 720h} [--namespace N] [--label k=v]... [--dry-run] [--json]
//	cairn-kube cleanup [--grace DURATION] [--dry-run] [--json]
//	cairn-kube init | scrub | deep-scrub | version
//
// The objects of namespace N are the version k8s/N: a tar of one YAML
// document per object at GROUP/VERSION/KIND/NAME.yaml, sorted, so an
// unchanged namespace stores almost nothing new. --volumes data backs up the
// selected PVCs' RBD images as cairn-block backup-all --selector does
// (volumes N/PVC; needs the build tags "ceph pacific"); --volumes snapshot
// takes a CSI VolumeSnapshot of each and keeps it (its content's deletion
// policy becomes Retain); either way the objects version records what it
// took, and restore brings each PVC back bound to its data. enforce also
// deletes the VolumeSnapshots of the versions it removes.
//
// Secrets are backed up into encrypted repositories only, unless
// --allow-unencrypted-secrets. --repo defaults to $CAIRN_REPO, the
// passphrase comes from $CAIRN_PASSWORD or --password-file, the cluster from
// the Pod's service account, else --kubeconfig or $KUBECONFIG.
// Exit codes: 0 success, 1 failure, 2 usage error, 3 partial (some volumes or
// objects failed, the rest was done), 10 no repository, 11 locked, 12 wrong
// passphrase, 130 interrupted.
package main

import (
	"github.com/cairn-backup/cairn/internal/cli"
	_ "github.com/cairn-backup/cairn/objstore/s3" // registers s3:// for --repo
)

func main() { cli.Main(run) }
