// Package ceph is the one connection to a Ceph cluster that the RADOS store
// (objstore/rados) and the RBD backups (blockdiff/rbd) share: the standard
// Ceph environment (CEPH_CONF, CEPH_ARGS), timeouts on every monitor and OSD
// operation, and errors that say which configuration, monitors and keyring
// were tried. It needs the build tag ceph (with Debian's Ceph Pacific:
// -tags "ceph pacific").
package ceph
