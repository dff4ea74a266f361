// Package rbd backs up Ceph RBD images into a blockdiff repository and
// restores them, through librbd (go-ceph). Everything but URL parsing needs
// the build tag ceph (with Debian's Ceph Pacific: -tags "ceph pacific").
//
// URLs: rbd://POOL/IMAGE names an image, rbd://POOL/IMAGE@SNAPSHOT one of its
// snapshots, and rbd://POOL/NAMESPACE/IMAGE[@SNAPSHOT] an image in an RBD
// namespace. The cluster is reached through the standard Ceph environment:
// CEPH_CONF names ceph.conf (which names the keyring), CEPH_ARGS adds options
// such as --id NAME.
//
// Source reads a snapshot for blockdiff.Backup: ReadAt splits each block into
// parallel librbd reads, and the snapshot's allocation map (diff-iterate
// against nothing) lets Backup skip unallocated ranges without reading them.
// Changes turns diff-iterate between two snapshots into blockdiff hints.
//
// Conn.Backup is Benji's helper workflow built in: snapshot the image as
// b-<UTC timestamp>, find the newest valid version of the volume whose
// snapshot still exists on the image (the snapshot's name and ID are
// recorded in the version's labels rbd-snapshot and rbd-snapshot-id), back up
// with the diff from it as hints (a full read when there is none), and only
// when the new version is valid remove the older b- snapshots. Conn.Restore
// writes a version to an image, creating it when absent.
package rbd
