// Command cairn-block is cairn's replacement for Benji: block-level backups of
// volume images into a deduplicating, optionally encrypted blockdiff
// repository, with differential backups from rbd diff hints and verified
// restores.
//
//	cairn-block init    --repo URL [--encrypt] [--block-size N]
//	cairn-block backup  --repo URL [--base VERSION] [--hints FILE|-] [--label k=v]... [--block-size N] SOURCE VOLUME
//	cairn-block restore --repo URL [--sparse] [--force] VERSION DEST
//	cairn-block ls      --repo URL [--volume V] [--label k=v] [--json]
//	cairn-block rm      --repo URL [--force] VERSION...
//	cairn-block protect|unprotect --repo URL VERSION...
//	cairn-block label   --repo URL VERSION k=v... | k-
//	cairn-block scrub|deep-scrub --repo URL [VERSION...|--all] [--percent P] [--json]
//	cairn-block enforce --repo URL RULES [--volume V] [--label k=v]... [--dry-run] [--json]
//	cairn-block cleanup --repo URL [--grace DURATION] [--dry-run] [--json]
//	cairn-block locks|unlock [--force] --repo URL
//	cairn-block storage-stats --repo URL [--json]
//	cairn-block nbd     --repo URL [--listen 127.0.0.1:10809]
//	cairn-block backup-all  --repo URL --pool POOL [--image-regex R] [--snapshot-prefix P] [--json]
//	cairn-block backup-all  --repo URL --selector SEL {--namespace N... | --all-namespaces} [--kubeconfig F] [--snapshot-prefix P] [--json]
//	cairn-block restore-pvc --repo URL VERSION --namespace N --pvc NAME [--force] [--kubeconfig F]
//
// backup-all and restore-pvc need the build tags `ceph pacific`. With
// --selector, backup-all backs up the RBD image behind each PVC the label
// selector chooses, as the volume NAMESPACE/PVC (package kube resolves PVC ->
// PV -> image); restore-pvc writes a version back into a PVC's image and
// refuses while a VolumeAttachment names its PV (unless --force).
//
// restore --force also restores a version that a scrub or a failed backup
// marked invalid (every block is still verified). Backups hold a shared
// repository lock and cleanup an exclusive one (--lock-ttl, --lock-wait).
//
// --repo defaults to $CAIRN_REPO. The passphrase of an encrypted repository
// comes from $CAIRN_PASSWORD or --password-file, never from a flag value.
// Exit codes: 0 success, 1 failure, 2 usage error, 3 partial (backup-all:
// some volumes failed), 10 no repository, 11 locked, 12 wrong passphrase,
// 130 interrupted.
package main

import (
	"github.com/cairn-backup/cairn/internal/cli"
	_ "github.com/cairn-backup/cairn/objstore/s3" // registers s3:// for --repo
)

func main() { cli.Main(run) }
